"""SIGKILL `rllib-o2o run` inside each stage at seeded random points, resume, and check results.json.

A kill point is "after the k-th progress line of the stage, plus a delay", both
drawn from a seeded RNG, so a kill can land in training, in evaluation, or in the
middle of writing a checkpoint. The stages are tiny (400 offline updates in 4
iterations, 500 Z steps, 600 online env steps in 3 iterations), and each kill
point leaves at least one iteration of its stage to run after it.
"""

from __future__ import annotations

import random

import pytest

from tests.faults.pipeline_proc import (
    ONLINE_STEPS,
    KillPoint,
    PipelineProcess,
    check_results,
    copy_stages,
    newest_checkpoint,
    run_command,
    run_to_end,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ONLINE_LINE = r"^online \d+/\d+ env steps"


def _resumed_where_it_stopped(stage: str, checkpoint: dict | None, log: str) -> None:
    """The resumed run continued from the checkpoint it found (and re-did nothing before it)."""
    if stage == "offline":
        if checkpoint:
            assert f"offline stage: resumed at iteration {checkpoint['iteration']}" in log, log[-3000:]
            for done in range(1, checkpoint["iteration"] + 1):
                assert f"offline {100 * done}/" not in log, log[-3000:]
        else:
            assert "offline 100/" in log
    if stage == "online":
        if checkpoint:
            steps = checkpoint["env_steps"]
            assert f"online stage: resumed at {steps} env steps" in log, log[-3000:]
            for done in range(0, steps + 1, 200):
                assert f"online {done}/" not in log, log[-3000:]
        else:
            assert "online 0/" in log, log[-3000:]


def test_sigkill_in_offline_stage_then_resume(offline_killed_run):
    run = offline_killed_run
    assert run["reached"], f"never reached the kill point {run['point']}:\n{run['killed_log'][-3000:]}"
    assert not run["state"]["offline_done"], f"killed too late ({run['point']}): stage 1 had finished"
    assert run["rc"] == 0, run["resumed_log"][-4000:]
    _resumed_where_it_stopped("offline", run["state"]["checkpoint"], run["resumed_log"])
    check_results(run["out"])


@pytest.mark.parametrize("stage, seed", [("alignment", 6002), ("online", 6003)])
def test_sigkill_in_stage_then_resume(tmp_path, fault_dataset, finished_stages, stage, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    copy_stages(finished_stages, out, ("offline",) if stage == "alignment" else ("offline", "alignment"))
    args = run_command(fault_dataset, out, write_config(tmp_path))
    if stage == "alignment":  # one Ray task, no checkpoint: the kill lands in its start-up or its Z fit
        point = KillPoint.draw(rng, r"^alignment: fitting Z", (1, 1), 1.0)
    else:
        point = KillPoint.draw(rng, ONLINE_LINE, (1, 3), 0.25)

    killed = PipelineProcess(args)
    assert killed.kill_at(point), f"never reached {point}:\n{killed.output[-3000:]}"
    assert not (out / stage / "DONE.json").exists(), f"killed too late ({point}): {stage} had finished"
    checkpoint = newest_checkpoint(out / stage)

    rc, log = run_to_end(args)
    assert rc == 0, log[-4000:]
    assert "offline stage: already complete" in log
    if stage == "alignment":
        assert "alignment: fitting Z" in log and "online 0/" in log
    else:
        assert "alignment: already complete" in log
    _resumed_where_it_stopped(stage, checkpoint, log)
    check_results(out)


def test_three_consecutive_kills_then_resume(tmp_path, fault_dataset, finished_stages):
    """Kill in alignment, then twice in the online stage (each resumed run is the one killed next)."""
    rng = random.Random(6004)
    online_steps = 1_000  # room for two kills in the online stage
    out = tmp_path / "run"
    copy_stages(finished_stages, out, ("offline",))
    args = run_command(fault_dataset, out, write_config(tmp_path), online_steps=online_steps)
    points = [KillPoint.draw(rng, r"^alignment: fitting Z", (1, 1), 1.0),
              KillPoint.draw(rng, ONLINE_LINE, (1, 3), 0.25),
              KillPoint.draw(rng, ONLINE_LINE, (1, 1), 0.25)]
    for point, stage in zip(points, ("alignment", "online", "online")):
        proc = PipelineProcess(args)
        assert proc.kill_at(point), f"finished before {point}:\n{proc.output[-3000:]}"
        assert not (out / stage / "DONE.json").exists(), f"killed too late ({point}): {stage} had finished"
    checkpoint = newest_checkpoint(out / "online")
    rc, log = run_to_end(args)
    assert rc == 0, log[-4000:]
    _resumed_where_it_stopped("online", checkpoint, log)
    results = check_results(out, online_steps)
    assert results["online"]["env_steps"] == online_steps
    assert ONLINE_STEPS < online_steps
