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

from rllib_o2o.rundir.names import RESUMED_FROM
from tests.faults.pipeline_proc import ALIGN_STEPS, EVAL_EVERY, TINY, check_results

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BEFORE = {"offline": (), "alignment": ("offline",), "online": ("offline", "alignment")}
# Each stage's progress counter, and the steps of its curve's points: one per evaluation, in order.
COUNTER = {"offline": ("updates", TINY["offline_eval_every"], TINY["offline_eval_every"]),
           "online": ("env_steps", 0, EVAL_EVERY)}


def _first_kill_in(kill_chain, stage):
    return next(step for step in kill_chain["steps"] if step["stage"] == stage)


def _resumed_where_it_stopped(stage: str, step: dict) -> None:
    """The next run continued from the checkpoint the kill left and re-did nothing before it, judged from
    the stage's files after that run: the progress it saved last (DONE.json or its newest checkpoint)
    names the kill's checkpoint last in `resumed_from` (none: it started afresh), and its curve holds
    the checkpoint's points unchanged, then the later ones, each evaluation once and in order."""
    before, after, log = step["files"], step["next_files"], step["next_log"][-3000:]
    if stage == "alignment":  # a Ray task without checkpoints: it runs again, stage 1 is not redone
        assert after["offline"]["done"] == before["offline"]["done"], log
        done = after["alignment"]["done"]
        assert done is not None, log
        every = done["settings"]["curve_every"]
        assert [p["step"] for p in done["z_loss_curve"]] == list(range(every, ALIGN_STEPS + 1, every)), done
        return
    if stage == "online":
        assert after["alignment"]["done"] == before["alignment"]["done"], log  # not redone
    checkpoint = step["checkpoint"]
    saved = after[stage]["done"] or after[stage]["checkpoint"]
    if saved is None:  # killed again before its first save, as the kill before it was
        assert checkpoint is None, log
        return
    resumed = saved.get(RESUMED_FROM, [])
    counter, first, every = COUNTER[stage]
    if checkpoint:
        where = checkpoint["iteration"] if stage == "offline" else checkpoint["env_steps"]
        assert resumed and resumed[-1] == where, (resumed, where, log)
        assert saved["curve"][:len(checkpoint["curve"])] == checkpoint["curve"], log
    else:
        assert resumed == [], (resumed, log)
    steps = [p[counter] for p in saved["curve"]]
    assert steps == list(range(first, first + every * len(steps), every)), (steps, log)


@pytest.mark.parametrize("stage", ["offline", "alignment", "online"])
def test_sigkill_in_stage_then_resume(kill_chain, stage):
    step = _first_kill_in(kill_chain, stage)
    assert step["reached"], f"never reached the kill point {step['point']}:\n{step['log'][-3000:]}"
    assert all(step["done"][s] for s in BEFORE[stage]), step["done"]
    assert not step["done"][stage], f"killed too late ({step['point']}): {stage} had finished"
    _resumed_where_it_stopped(stage, step)


def test_consecutive_kills_then_resume_to_completion(kill_chain):
    steps = kill_chain["steps"]
    assert [s["stage"] for s in steps] == ["offline", "alignment", "online", "online"]
    assert all(s["reached"] for s in steps), [str(s["point"]) for s in steps if not s["reached"]]
    second_online = steps[3]
    assert not second_online["done"]["online"], f"killed too late ({second_online['point']})"
    _resumed_where_it_stopped("online", second_online)
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
