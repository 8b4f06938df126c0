"""Shared by the fault suite: one tiny dataset, and one run SIGKILLed four times, once or twice per stage.

The kill chain is the kill-point test data (tests/faults/test_kill_resume.py
asserts on it); its finished offline and alignment stages then seed the other
tests' run directories, so each of them pays only for the stage it breaks.
Process start-up (imports, a private local Ray) dominates on a small machine,
which is why the kills are chained: each resumed run is the one killed next.
"""

from __future__ import annotations

import random

import pytest

from rllib_o2o.data.schema import write_dataset
from tests.faults.pipeline_proc import (
    KillPoint,
    PipelineProcess,
    run_command,
    run_to_end,
    stage_files,
    write_config,
)

KILL_CHAIN_SEED = 6001
CHAIN_ONLINE_STEPS = 1_000  # 5 online iterations: room for two kills in stage 3
ONLINE_LINE = r"^online \d+/\d+ env steps"


@pytest.fixture(scope="session")
def fault_dataset(tmp_path_factory, pendulum_data):
    return write_dataset(tmp_path_factory.mktemp("faults-data") / "pendulum", *pendulum_data, rows_per_file=200)


def _kill_points(rng: random.Random) -> list[tuple[str, KillPoint]]:
    """(stage, point): after the k-th progress line of the stage plus a delay; each leaves >= 1 iteration to run."""
    return [
        ("offline", KillPoint.draw(rng, r"^offline \d+/\d+ updates", (1, 3), 0.25)),
        ("alignment", KillPoint.draw(rng, r"^alignment: (fitting|distilling) Z", (1, 1), 1.0)),  # start-up or Z fit
        ("online", KillPoint.draw(rng, ONLINE_LINE, (1, 3), 0.25)),
        ("online", KillPoint.draw(rng, ONLINE_LINE, (1, 1), 0.25)),
    ]


@pytest.fixture(scope="session")
def kill_chain(tmp_path_factory, fault_dataset):
    """Runs the pipeline, SIGKILLs it at each seeded point in turn (re-running the same command), then lets
    it finish. Each step records the kill point, what was on disk after the kill (`files`: each stage's
    DONE.json and newest checkpoint) and, as `next_files`, after the next run (killed in turn, or run to
    the end); the logs only for failure messages."""
    work = tmp_path_factory.mktemp("faults-kill-chain")
    out = work / "run"
    args = run_command(fault_dataset, out, write_config(work), online_steps=CHAIN_ONLINE_STEPS)
    steps = []
    for stage, point in _kill_points(random.Random(KILL_CHAIN_SEED)):
        proc = PipelineProcess(args)
        reached = proc.kill_at(point)
        files = stage_files(out)
        if steps:
            steps[-1].update(next_log=proc.output, next_files=files)
        steps.append({"stage": stage, "point": point, "reached": reached, "log": proc.output, "files": files,
                      "done": {s: f["done"] is not None for s, f in files.items()},
                      "checkpoint": files[stage]["checkpoint"]})
        print(f"kill in {stage} {point}: reached={reached}, done={steps[-1]['done']}, "
              f"checkpoint={steps[-1]['checkpoint'] and {k: v for k, v in steps[-1]['checkpoint'].items() if k != 'curve'}}")
        if not reached:
            break
    rc, log = run_to_end(args)
    steps[-1].update(next_log=log, next_files=stage_files(out))
    return {"out": out, "steps": steps, "rc": rc, "final_log": log, "online_steps": CHAIN_ONLINE_STEPS}


@pytest.fixture(scope="session")
def finished_stages(kill_chain):
    """A run directory whose offline and alignment stages are complete (copy them, don't modify)."""
    out = kill_chain["out"]
    if not (out / "alignment" / "DONE.json").exists():
        pytest.skip("the kill-chain run did not get through its alignment stage; see test_kill_resume.py")
    return out
