"""Ray Tune over ACA's online stage: knobs and space, 2 tiny trials from one aligned checkpoint,
and an interrupted experiment (SIGKILL) resumed by re-running the same command (Tuner.restore)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from rllib_o2o.cli import main
from rllib_o2o.tune import DEFAULT_SPACE, TuneSettings, max_seed_episodes, trial_settings

REPO = Path(__file__).resolve().parents[1]
TINY = {"batch_size": 64, "offline_eval_every": 100, "hidden": [32, 32], "replay_capacity": 10_000,
        "offline_steps": 200, "align_steps": 100, "online_steps": 400, "eval_every": 200, "eval_episodes": 1}


# ---------------------------------------------------------------- knobs, space, CLI errors (fast)


def test_trial_knobs_override_the_preset_and_keep_w_min_below_w0():
    from rllib_o2o.pipeline import PipelineConfig

    base = asdict(PipelineConfig(env="Pendulum-v1", preset="medium"))
    cfg, preset, lrs = trial_settings(base, {"clip_beta": 3.5, "w0": 0.8, "w_T": 10, "w_min": 0.9,
                                             "entropy_scale": 0.5, "seed_episodes": 5, "actor_lr": 1e-4,
                                             "seed": 7})
    assert preset.clip_beta == 3.5 and preset.entropy_scale == 0.5 and preset.seed_episodes == 5
    assert preset.w_schedule == (0.8, 10.0, 0.8)  # w_min clamped to w0
    assert lrs == {"actor_lr": 1e-4} and cfg.seed == 7
    cfg, preset, lrs = trial_settings(base, {})
    assert preset.w_schedule == (1.0, 40.0, 0.5) and lrs == {} and cfg.seed == 0  # the medium preset as is


def test_search_space_specs_and_settings_are_checked():
    TuneSettings().validate()
    assert max_seed_episodes(DEFAULT_SPACE, 0) == 50
    assert max_seed_episodes({"seed_episodes": {"randint": [0, 20]}}, 0) == 20
    assert max_seed_episodes({}, 7) == 7
    for bad in ({"beta": [1, 2]}, {"clip_beta": {"uniform": [5, 1]}}, {"actor_lr": {"loguniform": [0, 1]}},
                {"w_T": []}, {"w_T": {"normal": [0, 1]}}, {"w_T": "forty"}):
        with pytest.raises(ValueError):
            TuneSettings(space=bad).validate()
    with pytest.raises(ValueError, match="search"):
        TuneSettings(search="bayes").validate()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_tune_cli_refuses_stage_1_2_flags_with_from_run(tmp_path, capsys):
    from rllib_o2o.pipeline import PipelineConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(asdict(PipelineConfig(env="Pendulum-v1", out=str(run)))))
    assert main(["tune", "--from-run", str(run), "--offline-steps", "5"]) == 2
    assert "offline_steps" in _one_error_line(capsys)
    assert main(["tune", "--from-run", str(tmp_path / "nothing")]) == 2
    assert "config.json" in _one_error_line(capsys)
    (tmp_path / "space.json").write_text(json.dumps({"beta": [1, 2]}))
    assert main(["tune", "--from-run", str(run), "--space", str(tmp_path / "space.json")]) == 2
    assert "beta" in _one_error_line(capsys)


# ---------------------------------------------------------------- real trials (slow)


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for the in-process parts (address="local": never someone else's cluster)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def aligned_run(local_ray, pendulum_data, tmp_path_factory):
    """Stages 1-2 once, on the tiny Pendulum data; the run directory every trial starts from."""
    import torch

    from rllib_o2o.checkpoints import save_module_checkpoint
    from rllib_o2o.data.schema import write_dataset
    from rllib_o2o.networks import TanhGaussianActor
    from rllib_o2o.pipeline import PipelineConfig, open_run
    from rllib_o2o.tune import ensure_aligned

    work = tmp_path_factory.mktemp("tune")
    dataset = write_dataset(work / "pendulum", *pendulum_data, rows_per_file=200)
    # Stage 1 from a checkpoint (an untrained pi0 saved here): what is under test is the alignment
    # and the trials, and this spares the Ray Data offline stage (tests/test_pipeline.py covers it).
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 1, (32, 32))
    save_module_checkpoint(work / "pi0", {f"actor.{k}": v.numpy() for k, v in actor.state_dict().items()},
                           {"stage": "offline", "algorithm": "test", "obs_dim": 3, "act_dim": 1, "hidden": [32, 32],
                            "alpha_off": 0.2, "actor_activation": "relu"})
    cfg = PipelineConfig(dataset=str(dataset), env="Pendulum-v1", out=str(work / "run"),
                         offline_checkpoint=str(work / "pi0"), **TINY)
    run = open_run(cfg)
    with run.lock():
        ensure_aligned(cfg, run)
    # an imported policy is aligned by aca-td (no critic to distil Z from): alignment-td/
    assert (work / "run" / "alignment-td" / "DONE.json").exists()
    assert not list((work / "run").glob("online*"))  # no online stage: that is the trials' job
    return work / "run"


@pytest.mark.slow
def test_two_trials_fine_tune_from_one_aligned_checkpoint(local_ray, aligned_run, capsys):
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.tune import run_tune

    done = aligned_run / "alignment-td" / "DONE.json"
    aligned_at = done.stat().st_mtime_ns
    cfg = PipelineConfig.from_dict(json.loads((aligned_run / "config.json").read_text()))
    settings = TuneSettings(name="two", num_samples=2, search="random", scheduler="asha", grace_period=1,
                            space={"clip_beta": [3.0, 15.0], "w_T": [10, 100], "actor_lr": {"loguniform": [1e-4, 1e-3]},
                                   "seed_episodes": [0, 2]}, verbose=0)
    summary = run_tune(cfg, settings)
    assert "using the aligned checkpoint" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == aligned_at  # aligned once, not per trial

    assert summary["num_trials"] == 2 and summary["num_errors"] == 0
    trials = summary["trials"]
    assert all(t["iterations"] >= 1 and t["final_score"] is not None and t["dip"] is not None for t in trials)
    assert summary["num_completed"] >= 1  # ASHA may stop the worse one after its grace period
    assert all(t["env_steps"] == 400 for t in trials if t["completed"])
    # step 0 is the aligned offline policy, the same for every trial whatever its knobs
    assert len({t["score_at_0"] for t in trials}) == 1
    assert {tuple(sorted(t["config"])) for t in trials} == {("actor_lr", "clip_beta", "seed_episodes", "w_T")}
    for key in ("best_by_final_score", "best_by_dip"):
        assert summary[key]["trial_id"] in {t["trial_id"] for t in trials}
    best = summary["best_by_dip"]
    assert best["dip"] == max(t["dip"] for t in trials if t["completed"])
    experiment = Path(summary["experiment"])
    assert experiment == aligned_run / "tune" / "two"
    assert json.loads((experiment / "summary.json").read_text())["num_trials"] == 2
    assert (aligned_run / "tune_two_summary.json").exists()
    assert all(list(Path(t["path"]).glob("checkpoint_*")) for t in trials)


def _processes_with_env(marker: str) -> list[int]:
    """PIDs whose environment holds `marker` (this test's private RAY_TMPDIR): the Ray it started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _checkpointed_twice(experiment: Path) -> bool:
    """A trial of the experiment has a checkpoint of its second iteration or later (Tune keeps
    only the newest, so checkpoint_000001 alone may already be gone)."""
    indices = (p.name.rpartition("_")[2] for p in experiment.glob("aca_*/checkpoint_*"))
    return any(i.isdigit() and int(i) >= 1 for i in indices)


@pytest.mark.slow
def test_interrupted_experiment_resumes_from_trial_checkpoints(aligned_run):
    ray_tmp = tempfile.mkdtemp(prefix="o2ot", dir="/tmp")  # a private Ray: short path, easy to find
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(REPO / "pipelines" / "tune_aca.py"), "--from-run", str(aligned_run),
           "--online-steps", "4000", "--num-samples", "1", "--search", "random", "--name", "resume",
           "--space", str(aligned_run.parent / "space.json")]
    (aligned_run.parent / "space.json").write_text(json.dumps({"clip_beta": [7.0], "w_T": [40]}))
    experiment = aligned_run / "tune" / "resume"
    try:
        # 1) SIGKILL the whole driver once a trial has checkpointed twice (iteration 2 of 20: long
        #    enough that a fast machine does not finish the trial before the kill).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if _checkpointed_twice(experiment):
                time.sleep(1.5)  # > TUNE_GLOBAL_CHECKPOINT_S: the experiment state lists it
                break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        first_log = proc.communicate()[0]
        assert _checkpointed_twice(experiment), first_log[-3000:]
        assert not (experiment / "summary.json").exists(), "the experiment finished before it was interrupted"

        # 2) The same command again: Tuner.restore, the trial continues from its checkpoint.
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        out = again.stdout + again.stderr
        assert again.returncode == 0, out[-4000:]
        summary = json.loads((experiment / "summary.json").read_text())
        (trial,) = summary["trials"]
        assert trial["completed"] and trial["env_steps"] == 4000 and trial["error"] is None
        assert trial["restored_env_steps"] >= 200  # resumed from a checkpoint, not restarted from step 0
        rows = [json.loads(line) for line in Path(trial["path"], "result.json").read_text().splitlines()]
        assert rows[-1]["env_steps"] == 4000 and rows[-1]["training_iteration"] == 20
        first_after = next(r for r in rows if r["restored_env_steps"])
        assert first_after["env_steps"] == first_after["restored_env_steps"] + 200
        assert summary["best_by_final_score"]["trial_id"] == trial["trial_id"]
    finally:
        time.sleep(1)
        leftovers = _processes_with_env(f"RAY_TMPDIR={ray_tmp}")
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not leftovers, f"processes of the test's Ray survived: {leftovers}"
    shutil.rmtree(ray_tmp, ignore_errors=True)
