"""The whole pipeline end to end on a tiny dataset: results, skip, resume after SIGKILL, what it leaves and prints."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from rllib_o2o.metrics_log import (
    EVAL_RETURN,
    EVAL_SCORE,
    HELDOUT_RESIDUAL,
    LEARNER_PREFIX,
    TENSORBOARD_DIR,
    Z_LOSS,
)
from rllib_o2o.methods import DEFAULT_METHOD
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.stages.offline import ACTOR_VALUE_ESTIMATE, VALUE_ESTIMATE
from tests.tensorboard_events import scalars

pytestmark = pytest.mark.slow

TINY = {"batch_size": 64, "offline_eval_every": 100, "hidden": [32, 32], "replay_capacity": 10_000}


def command(dataset, out, config_file):
    return [sys.executable, "-m", "rllib_o2o.cli", "run", "--dataset", str(dataset), "--env", "Pendulum-v1",
            "--out", str(out), "--offline-steps", "250", "--align-steps", "100", "--online-steps", "500",
            "--eval-every", "200", "--eval-episodes", "1", "--config", str(config_file)]


def run_until(cmd, marker: str, timeout: float = 300, env: dict | None = None) -> str:
    """Starts `cmd`, SIGKILLs its whole process group once `marker` is printed; returns the output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    lines, deadline = [], time.time() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line or time.time() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return "".join(lines)


def test_pipeline_completes_then_skips_and_resumes_after_kill(tmp_path, pendulum_dir):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    cmd = command(pendulum_dir, out, config_file)
    home = tmp_path / "home"  # where RLlib's Trainable would leave ~/ray_results/<timestamp> per algorithm
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    # The default method's stage directories and results file.
    run = RunDir(out)
    align_dir, online_dir = run.alignment_stage(DEFAULT_METHOD).path, run.online_stage(DEFAULT_METHOD).path
    results_file = run.results_path(DEFAULT_METHOD)

    # 1) killed in stage 3 right after its first checkpoint (its line follows the checkpoint).
    log = run_until(cmd, "online 200/500 env steps", env=env)
    assert "online 200/500 env steps" in log, log[-3000:]
    assert (out / "offline" / "DONE.json").exists() and (align_dir / "DONE.json").exists()
    assert not (online_dir / "DONE.json").exists() and not results_file.exists()

    # 2) re-run: stages 1-2 skipped, stage 3 resumed (not restarted), finished.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "offline stage: already complete" in done.stdout
    assert "alignment: already complete" in done.stdout
    assert "online stage: resumed at" in done.stdout
    assert "online 0/500" not in done.stdout and "online 200/500" not in done.stdout

    results = json.loads(results_file.read_text())
    for key in ("offline_score", "dip", "final_score", "offline", "alignment", "online"):
        assert key in results
    steps = [p["env_steps"] for p in results["online"]["curve"]]
    # every evaluation exactly once; budgets that are not multiples of the evaluation interval are
    # kept exactly, the last iteration cut short (250 updates, not 300; 500 env steps, not 600)
    assert steps == [0, 200, 400, 500]
    assert [p["updates"] for p in results["offline"]["curve"]] == [100, 200, 250] and results["offline"]["updates"] == 250
    # every offline evaluation also records the critic's value of the handed-over average and of the raw actor
    assert all(math.isfinite(p[VALUE_ESTIMATE]) and math.isfinite(p[ACTOR_VALUE_ESTIMATE])
               for p in results["offline"]["curve"])
    from rllib_o2o.checkpoints import load_module_checkpoint

    assert int(load_module_checkpoint(out / "offline" / "module")[0]["num_updates"]) == 250
    assert results["final_score"] == results["online"]["curve"][-1]["score"]
    assert results["dip"] == min(p["score"] for p in results["online"]["curve"][:2])
    assert results["alignment"]["surgery_max_abs_error"] == 0.0
    assert [c["step"] for c in results["alignment"]["z_loss_curve"]][-1] == 100
    # the data's own score, beside the offline policy's: its mean episode return, normalised
    from rllib_o2o.data.schema import episode_returns, read_dataset

    from rllib_o2o.data.fingerprint import content_fingerprint

    rows = read_dataset(results["dataset"])[0]
    data_return = float(episode_returns(rows).mean())
    lo, hi = results["reference_scores"]
    assert results["dataset_score"] == pytest.approx(100 * (data_return - lo) / (hi - lo))
    assert results["dataset_fingerprint"] == content_fingerprint(rows)  # which rows it was trained on

    # 3) a third run does no training at all.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "online stage: already complete" in again.stdout
    assert "Offline" not in again.stderr[-200:]

    # Quiet by default: no Ray / Ray Data / RLlib noise, no line per checkpoint, one line per saved output.
    for noise in ("You are running", "local://", "Install gputil", "Running Dataset", "Started a local Ray"):
        assert noise not in log + done.stdout + done.stderr, noise
    assert done.stderr == "", done.stderr[-3000:]
    assert "checkpoint saved" not in log + done.stdout
    assert "offline: saved " in log and "alignment: saved " in log and "online: saved " in done.stdout
    assert not (home / "ray_results").exists() or not any((home / "ray_results").iterdir())

    # Live metrics: every stage's event files, the resumed online stage's appended to its first one.
    offline = scalars(out / "offline" / TENSORBOARD_DIR)
    assert [s for s, _ in offline[EVAL_RETURN]] == [100, 200, 250] == [s for s, _ in offline[EVAL_SCORE]]
    assert {"critic_loss", "alpha", "q_mean"} <= {t[len(LEARNER_PREFIX):] for t in offline if t.startswith(LEARNER_PREFIX)}
    alignment = scalars(align_dir / TENSORBOARD_DIR)
    assert [s for s, _ in alignment[Z_LOSS]] == [100] == [s for s, _ in alignment[HELDOUT_RESIDUAL]]
    assert alignment[Z_LOSS][0][1] == pytest.approx(results["alignment"]["z_loss_curve"][-1]["z_loss"])
    online = scalars(online_dir / TENSORBOARD_DIR)
    assert len(list((online_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    assert online[EVAL_RETURN] == [(p["env_steps"], pytest.approx(p["return"])) for p in results["online"]["curve"]]
    for name in ("kl_to_reference", "reference_weight", "alpha", "critic_loss"):  # learner, w, diagnostics
        assert [s for s, _ in online[LEARNER_PREFIX + name]] == [400, 500], name


def test_changed_config_is_refused(tmp_path, pendulum_dir):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"seed": 123}))
    res = subprocess.run(command(pendulum_dir, out, config_file), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "different config" in res.stderr and "seed" in res.stderr
