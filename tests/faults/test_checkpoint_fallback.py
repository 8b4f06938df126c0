"""Stage checkpoints: two kept, verified by manifest, a damaged newest one skipped with a warning.

The unit tests drive `StageDir.save_checkpoint` / `restore_checkpoint` and `train_loop` with
a stand-in algorithm (RLlib's `save_to_path` / `restore_from_path` contract);
the last test damages a real online checkpoint of a killed run and resumes it.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from rllib_o2o.checkpoints import CheckpointError
from rllib_o2o.console import Console
from rllib_o2o.nonfinite import NonFiniteError
from rllib_o2o.rundir.names import CHECKPOINT_DIR, CORRUPT_DIR, DONE_FILE, PREVIOUS_DIR
from rllib_o2o.rundir.stage import StageDir, read_checkpoint
from rllib_o2o.stages.common import train_loop
from tests.faults.pipeline_proc import (
    PipelineProcess,
    check_results,
    copy_stages,
    run_command,
    run_to_end,
    write_config,
)

pytestmark = pytest.mark.faults


class FakeAlgo:
    """Saves `state` as JSON plus a 4 kB blob; restoring reads both (as RLlib would, failing on damage)."""

    def __init__(self, state: int = 0, fail_at: int | None = None):
        self.state, self.fail_at = state, fail_at

    def save_to_path(self, path):
        os.makedirs(path)
        with open(os.path.join(path, "state.json"), "w") as fh:
            json.dump({"state": self.state}, fh)
        with open(os.path.join(path, "weights.bin"), "wb") as fh:
            fh.write(bytes([self.state % 256]) * 4096)

    def restore_from_path(self, path):
        with open(os.path.join(path, "state.json")) as fh:
            state = json.load(fh)["state"]
        with open(os.path.join(path, "weights.bin"), "rb") as fh:
            blob = fh.read()
        if blob != bytes([state % 256]) * 4096:
            raise ValueError("weights do not match the state")
        self.state = state

    def train(self):
        self.state += 1
        if self.state == self.fail_at:
            raise RuntimeError("injected learner fault\nsecond line of detail")
        return {"state": self.state}


def _save(stage_dir, iterations):
    algo = FakeAlgo()
    for i in range(1, iterations + 1):
        algo.state = i
        StageDir(stage_dir).save_checkpoint(algo, {"iteration": i, "curve": list(range(i))})


def _hidden(stage_dir):
    return sorted(p.name for p in stage_dir.iterdir() if p.name.startswith("."))


def test_two_newest_checkpoints_are_kept(tmp_path):
    stage = tmp_path / "online"
    _save(stage, 3)
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 3
    assert read_checkpoint(stage / PREVIOUS_DIR)["iteration"] == 2
    assert sorted(p.name for p in stage.iterdir()) == [CHECKPOINT_DIR, PREVIOUS_DIR]
    algo = FakeAlgo()
    assert StageDir(stage).restore_checkpoint(algo)["iteration"] == 3 and algo.state == 3


def test_no_checkpoint_means_a_fresh_stage(tmp_path):
    assert StageDir(tmp_path / "missing").restore_checkpoint(FakeAlgo()) is None
    (tmp_path / "empty").mkdir()
    assert StageDir(tmp_path / "empty").restore_checkpoint(FakeAlgo()) is None


def _truncate_blob(latest):
    path = latest / "algo" / "weights.bin"
    path.write_bytes(path.read_bytes()[:100])
    return "weights.bin: 100 bytes, manifest.json records 4096 (truncated or damaged)"


def _flip_a_byte(latest):
    path = latest / "algo" / "weights.bin"
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(bytes(data))
    return "weights.bin: content differs from its manifest.json checksum (damaged)"


def _remove_algo_dir(latest):
    import shutil

    shutil.rmtree(latest / "algo")
    return "missing (listed in manifest.json)"


def _garble_progress(latest):
    (latest / "progress.json").write_text('{"iteration": ')
    return "progress.json: "


def _legacy_without_manifest_and_bad_progress(latest):
    (latest / "manifest.json").unlink()
    (latest / "progress.json").write_text("[1, 2]")
    return "progress.json: no iteration count"


def _legacy_without_manifest_and_bad_state(latest):
    (latest / "manifest.json").unlink()
    (latest / "algo" / "state.json").write_text("{")
    return "JSONDecodeError"  # what the algorithm's own restore raised


DAMAGE = {f.__name__.lstrip("_"): f for f in (_truncate_blob, _flip_a_byte, _remove_algo_dir, _garble_progress,
                                               _legacy_without_manifest_and_bad_progress,
                                               _legacy_without_manifest_and_bad_state)}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_falls_back_to_previous_with_a_warning(tmp_path, capsys, damage):
    stage = tmp_path / "online"
    _save(stage, 3)
    latest = stage / CHECKPOINT_DIR
    problem = DAMAGE[damage](latest)

    algo = FakeAlgo()
    progress = StageDir(stage).restore_checkpoint(algo)
    assert progress["iteration"] == 2 and algo.state == 2
    err = capsys.readouterr().err
    assert f"WARNING: online checkpoint {latest} is unusable (" in err, err
    assert problem in err, err
    assert f"falling back to the previous checkpoint {stage / PREVIOUS_DIR}" in err, err
    assert f"resuming from the previous checkpoint {stage / PREVIOUS_DIR} (iteration 2)" in err, err
    assert (stage / CORRUPT_DIR).is_dir() and not latest.exists()

    # Training goes on: the next save must not rotate the damaged checkpoint over the good one.
    algo.state = 3
    StageDir(stage).save_checkpoint(algo, {"iteration": 3, "curve": [0, 1, 2]})
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 3
    assert read_checkpoint(stage / PREVIOUS_DIR)["iteration"] == 2


def test_no_usable_checkpoint_is_a_clear_error(tmp_path, capsys):
    stage = tmp_path / "offline"
    _save(stage, 2)
    _truncate_blob(stage / CHECKPOINT_DIR)
    _garble_progress(stage / PREVIOUS_DIR)
    with pytest.raises(CheckpointError) as err:
        StageDir(stage).restore_checkpoint(FakeAlgo())
    message = str(err.value)
    assert "no usable checkpoint" in message and "\n" not in message
    assert str(stage / CHECKPOINT_DIR) in message and str(stage / PREVIOUS_DIR) in message
    assert f"delete {stage}/{CHECKPOINT_DIR}*" in message
    assert capsys.readouterr().err.count("WARNING: offline checkpoint") == 2
    assert (stage / CHECKPOINT_DIR).exists()  # nothing moved or deleted when nothing could be used


def test_killed_between_the_two_renames(tmp_path, capsys):
    """State after a kill between `checkpoint -> checkpoint.prev` and `tmp -> checkpoint`."""
    stage = tmp_path / "online"
    _save(stage, 2)
    (stage / PREVIOUS_DIR).rename(stage / ".checkpoint.prev.trash-123")
    (stage / CHECKPOINT_DIR).rename(stage / PREVIOUS_DIR)
    FakeAlgo(9).save_to_path(stage / ".checkpoint.tmp-abc" / "algo")  # the uncommitted third checkpoint
    algo = FakeAlgo()
    assert StageDir(stage).restore_checkpoint(algo)["iteration"] == 2 and algo.state == 2
    assert "WARNING" not in capsys.readouterr().err
    assert _hidden(stage) == []  # half-written and rotated-out leftovers are removed
    algo.state = 3
    StageDir(stage).save_checkpoint(algo, {"iteration": 3})
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 3
    assert read_checkpoint(stage / PREVIOUS_DIR)["iteration"] == 2


def test_failed_save_keeps_the_old_checkpoints(tmp_path):
    stage = tmp_path / "online"
    _save(stage, 2)

    class Full(FakeAlgo):
        def save_to_path(self, path):
            super().save_to_path(path)
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        StageDir(stage).save_checkpoint(Full(5), {"iteration": 5})
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 2
    assert read_checkpoint(stage / PREVIOUS_DIR)["iteration"] == 1
    assert _hidden(stage) == []


def test_a_training_crash_names_the_checkpoint_to_resume_from(tmp_path, capsys):
    stage = tmp_path / "online"
    algo = FakeAlgo(fail_at=3)
    progress = {"iteration": 0}
    with pytest.raises(RuntimeError, match="injected learner fault"):
        _train(algo, stage, progress)
    err = capsys.readouterr().err
    assert (f"ERROR: online stage failed in training iteration 3 (RuntimeError: injected learner fault); "
            f"the last complete checkpoint is {stage / CHECKPOINT_DIR} (iteration 2). "
            "Re-run the same command to resume from it.") in err, err
    resumed = FakeAlgo()
    assert StageDir(stage).restore_checkpoint(resumed)["iteration"] == 2 and resumed.state == 2


def _train(algo, stage_dir, progress, iterations=5, checkpoint_every=1):
    """`train_loop` for `iterations` iterations of `algo` in a real StageDir at `stage_dir`."""
    return train_loop(algo, StageDir(stage_dir), progress, lambda p: p["iteration"] >= iterations,
                      lambda p, r: f"it {p['iteration']}", checkpoint_every,
                      Console(io.StringIO()).progress(stage_dir.name, iterations, "iterations"),
                      lambda p: p["iteration"])


class DivergingAlgo(FakeAlgo):
    """Reports RLlib-shaped learner results whose `metric` (a path under "learners") is `value` from
    iteration `diverge_at` on."""

    def __init__(self, diverge_at: int, metric: tuple = ("default_policy", "critic_loss"), value=float("nan")):
        super().__init__()
        self.diverge_at, self.metric, self.value = diverge_at, metric, value

    def train(self):
        result = super().train()
        learners = {"default_policy": {"critic_loss": 0.5, "q_mean": -3.0, "alpha": 0.2, "num_updates_lifetime": 7},
                    "num_env_steps_sampled_o2o": 200 * self.state}
        if self.state >= self.diverge_at:
            *parents, name = self.metric
            inner = learners
            for key in parents:
                inner = inner[key]
            inner[name] = self.value
        return {**result, "learners": learners}


@pytest.mark.parametrize("metric, value", [
    (("default_policy", "critic_loss"), float("nan")),
    (("default_policy", "q_mean"), float("-inf")),
    (("num_env_steps_sampled_o2o",), float("inf")),
])
def test_a_non_finite_learner_result_stops_the_stage_before_its_checkpoint(tmp_path, metric, value):
    stage = tmp_path / "online"
    with pytest.raises(NonFiniteError) as err:
        _train(DivergingAlgo(diverge_at=3, metric=metric, value=value), stage, {"iteration": 0})
    message = str(err.value)
    assert "/".join(("learners",) + metric) in message and "iteration 3" in message and "\n" not in message
    assert str(stage / CHECKPOINT_DIR) in message  # where the last good checkpoint is
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 2  # iteration 3 was never saved
    assert read_checkpoint(stage / PREVIOUS_DIR)["iteration"] == 1
    assert not (stage / DONE_FILE).exists()
    resumed = FakeAlgo()
    assert StageDir(stage).restore_checkpoint(resumed)["iteration"] == 2 and resumed.state == 2


def test_a_non_finite_result_between_checkpoints_keeps_the_older_one(tmp_path):
    stage = tmp_path / "offline"
    progress = {"iteration": 0}
    with pytest.raises(NonFiniteError, match="iteration 5"):
        _train(DivergingAlgo(diverge_at=5), stage, progress, iterations=8, checkpoint_every=2)
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 4
    assert progress["iteration"] == 4  # the diverged iteration is not recorded either
    assert not (stage / DONE_FILE).exists()


def test_finite_learner_results_train_to_the_end(tmp_path):
    stage = tmp_path / "online"
    assert _train(DivergingAlgo(diverge_at=99), stage, {"iteration": 0})["iteration"] == 5
    assert read_checkpoint(stage / CHECKPOINT_DIR)["iteration"] == 5


@pytest.mark.slow
def test_real_checkpoint_damaged_after_a_kill_resumes_from_the_previous(tmp_path, fault_dataset, finished_stages):
    out = tmp_path / "run"
    copy_stages(finished_stages, out, ("offline", "alignment"))
    args = run_command(fault_dataset, out, write_config(tmp_path))
    proc = PipelineProcess(args)
    assert proc.wait_for(r"^online 400/600 env steps"), proc.output[-3000:]  # printed once iteration 2 is saved
    proc.kill()
    latest, previous = out / "online" / CHECKPOINT_DIR, out / "online" / PREVIOUS_DIR
    assert read_checkpoint(latest)["env_steps"] == 400 and read_checkpoint(previous)["env_steps"] == 200

    # Truncate the biggest file of RLlib's state in the newest checkpoint.
    victim = max((p for p in (latest / "algo").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    rc, log = run_to_end(args)
    assert rc == 0, log[-4000:]
    assert f"WARNING: online checkpoint {latest} is unusable ({victim}: " in log, log[-4000:]
    assert f"resuming from the previous checkpoint {previous} (iteration 1)" in log, log[-4000:]
    assert "online stage: resumed at 200 env steps" in log, log[-4000:]
    assert (out / "online" / CORRUPT_DIR).is_dir()
    check_results(out)  # the evaluation at 400 env steps was redone, and appears once
