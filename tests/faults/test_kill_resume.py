"""SIGKILL `rllib-o2o run` inside each stage at seeded random points, resume, and check results.json.

A kill point is "after the k-th progress line of the stage, plus a delay", both
drawn from a seeded RNG (conftest.KILL_CHAIN_SEED), so a kill can land in
training, in evaluation or in the middle of writing a checkpoint. The stages are
tiny (400 offline updates in 4 iterations, 500 Z steps, 1000 online env steps in
5 iterations). One run directory is killed in stage 1, then (re-running the same
command) in the alignment task, then twice in stage 3, and finally runs to the end.
"""

from __future__ import annotations

import json

import pytest

from tests.faults.pipeline_proc import EVAL_EVERY, check_results

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BEFORE = {"offline": (), "alignment": ("offline",), "online": ("offline", "alignment")}


def _first_kill_in(kill_chain, stage):
    return next(step for step in kill_chain["steps"] if step["stage"] == stage)


def _resumed_where_it_stopped(stage: str, checkpoint: dict | None, log: str) -> None:
    """The next run continued from the checkpoint the kill left (and re-did nothing before it)."""
    if stage == "offline":
        if checkpoint:  # where it resumed: DONE.json's resumed_from (test_consecutive_kills_...)
            for done in range(1, checkpoint["iteration"] + 1):
                assert f"offline {100 * done}/" not in log, log[-3000:]
        else:
            assert "offline 100/" in log, log[-3000:]
    elif stage == "alignment":  # a Ray task without checkpoints: it runs again, stage 1 is not redone
        assert "offline stage: already complete" in log and "alignment: fitting Z" in log, log[-3000:]
    else:
        assert "alignment: already complete" in log, log[-3000:]
        if checkpoint:
            steps = checkpoint["env_steps"]
            for done in range(0, steps + 1, EVAL_EVERY):
                assert f"online {done}/" not in log, log[-3000:]
        else:
            assert "online 0/" in log, log[-3000:]


@pytest.mark.parametrize("stage", ["offline", "alignment", "online"])
def test_sigkill_in_stage_then_resume(kill_chain, stage):
    step = _first_kill_in(kill_chain, stage)
    assert step["reached"], f"never reached the kill point {step['point']}:\n{step['log'][-3000:]}"
    assert all(step["done"][s] for s in BEFORE[stage]), step["done"]
    assert not step["done"][stage], f"killed too late ({step['point']}): {stage} had finished"
    _resumed_where_it_stopped(stage, step["checkpoint"], step["next_log"])


def test_consecutive_kills_then_resume_to_completion(kill_chain):
    steps = kill_chain["steps"]
    assert [s["stage"] for s in steps] == ["offline", "alignment", "online", "online"]
    assert all(s["reached"] for s in steps), [str(s["point"]) for s in steps if not s["reached"]]
    second_online = steps[3]
    assert not second_online["done"]["online"], f"killed too late ({second_online['point']})"
    _resumed_where_it_stopped("online", second_online["checkpoint"], second_online["next_log"])
    assert kill_chain["rc"] == 0, kill_chain["final_log"][-4000:]
    results = check_results(kill_chain["out"], kill_chain["online_steps"])
    assert results["online"]["env_steps"] == kill_chain["online_steps"]
    # Where each stage resumed, from its DONE.json: the offline stage from the checkpoint its kill left;
    # the online stage finally from the checkpoint the second online kill left, after the first's.
    offline_kill, online_kills = steps[0]["checkpoint"], [s["checkpoint"] for s in steps[2:]]
    offline_done = json.loads((kill_chain["out"] / "offline" / "DONE.json").read_text())
    assert offline_done["resumed_from"] == ([offline_kill["iteration"]] if offline_kill else []), offline_done
    resumed = results["online"]["resumed_from"]
    expected = [c["env_steps"] for c in online_kills if c]
    assert resumed == sorted(resumed) and set(resumed) <= set(expected), (resumed, expected)
    if online_kills[-1]:
        assert resumed[-1] == online_kills[-1]["env_steps"], (resumed, online_kills)
