"""The whole pipeline end to end on a tiny dataset: results, skip, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

TINY = {"batch_size": 64, "offline_eval_every": 100, "hidden": [32, 32], "replay_capacity": 10_000}


def command(dataset, out, config_file):
    return [sys.executable, "-m", "rllib_o2o.cli", "run", "--dataset", str(dataset), "--env", "Pendulum-v1",
            "--out", str(out), "--offline-steps", "200", "--align-steps", "100", "--online-steps", "600",
            "--eval-every", "200", "--eval-episodes", "1", "--config", str(config_file)]


def run_until(cmd, marker: str, timeout: float = 300) -> str:
    """Starts `cmd`, SIGKILLs its whole process group once `marker` is printed; returns the output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
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

    # 1) killed in stage 3 right after its first checkpoint (online 200/600).
    log = run_until(cmd, "checkpoint saved (online, iteration 1)")
    assert "checkpoint saved (online, iteration 1)" in log, log[-3000:]
    assert (out / "offline" / "DONE.json").exists() and (out / "alignment" / "DONE.json").exists()
    assert not (out / "online" / "DONE.json").exists() and not (out / "results.json").exists()

    # 2) re-run: stages 1-2 skipped, stage 3 resumed (not restarted), finished.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "offline stage: already complete" in done.stdout
    assert "alignment: already complete" in done.stdout
    assert "online stage: resumed at" in done.stdout
    assert "online 0/600" not in done.stdout and "online 200/600" not in done.stdout

    results = json.loads((out / "results.json").read_text())
    for key in ("offline_score", "dip", "final_score", "offline", "alignment", "online"):
        assert key in results
    steps = [p["env_steps"] for p in results["online"]["curve"]]
    assert steps == [0, 200, 400, 600]  # every evaluation exactly once
    assert results["final_score"] == results["online"]["curve"][-1]["score"]
    assert results["dip"] == min(p["score"] for p in results["online"]["curve"][:2])
    assert results["alignment"]["surgery_max_abs_error"] == 0.0
    assert [c["step"] for c in results["alignment"]["z_loss_curve"]][-1] == 100

    # 3) a third run does no training at all.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "online stage: already complete" in again.stdout
    assert "Offline" not in again.stderr[-200:]


def test_changed_config_is_refused(tmp_path, pendulum_dir):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"seed": 123}))
    res = subprocess.run(command(pendulum_dir, out, config_file), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "different config" in res.stderr and "seed" in res.stderr
