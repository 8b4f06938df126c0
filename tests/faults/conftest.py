"""Shared by the fault suite: one tiny dataset, and one run killed in its offline stage then resumed.

That run is itself the offline kill-point test (tests/faults/test_kill_resume.py);
its finished offline and alignment stages seed the other tests' run directories,
so each of them pays only for the stage it breaks.
"""

from __future__ import annotations

import random

import pytest

from rllib_o2o.data.schema import write_dataset
from tests.faults.pipeline_proc import (
    KillPoint,
    PipelineProcess,
    newest_checkpoint,
    run_command,
    run_to_end,
    write_config,
)

OFFLINE_KILL_SEED = 6001


@pytest.fixture(scope="session")
def fault_dataset(tmp_path_factory, pendulum_data):
    return write_dataset(tmp_path_factory.mktemp("faults-data") / "pendulum", *pendulum_data, rows_per_file=200)


@pytest.fixture(scope="session")
def offline_killed_run(tmp_path_factory, fault_dataset):
    """A run SIGKILLed at a seeded point of stage 1 (after its k-th progress line), then resumed to the end."""
    work = tmp_path_factory.mktemp("faults-offline-kill")
    out = work / "run"
    args = run_command(fault_dataset, out, write_config(work))
    point = KillPoint.draw(random.Random(OFFLINE_KILL_SEED), r"^offline \d+/\d+ updates", (1, 3), 0.25)
    killed = PipelineProcess(args)
    reached = killed.kill_at(point)
    state = {"offline_done": (out / "offline" / "DONE.json").exists(),
             "checkpoint": newest_checkpoint(out / "offline")}
    rc, resumed = run_to_end(args)
    return {"out": out, "args": args, "point": point, "reached": reached, "killed_log": killed.output,
            "state": state, "rc": rc, "resumed_log": resumed}


@pytest.fixture(scope="session")
def finished_stages(offline_killed_run):
    """A run directory whose offline and alignment stages are complete (copy them, don't modify)."""
    out = offline_killed_run["out"]
    if not (out / "alignment" / "DONE.json").exists():
        pytest.skip("the offline kill-point run did not finish; see test_sigkill_in_stage_then_resume[offline]")
    return out
