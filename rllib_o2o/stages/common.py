"""What stages 1 and 3 share: the resumable training loop and the evaluation helpers.

A stage's checkpoints, DONE.json marker and uploads are its `rundir.stage.StageDir`'s.
"""

from __future__ import annotations

import sys
from typing import Callable

from rllib_o2o.console import StageProgress
from rllib_o2o.rundir.stage import StageDir


def evaluation_return(result: dict) -> float | None:
    """Mean evaluation return from `train()` results or from `evaluate()`'s own dict."""
    evaluation = result.get("evaluation", result)
    return evaluation.get("env_runners", {}).get("episode_return_mean")


def format_eval(ret: float, score: float | None) -> str:
    return f"return {ret:.1f}" + ("" if score is None else f" score {score:.1f}")


def train_loop(algo, stage: StageDir, progress: dict, is_finished: Callable[[dict], bool],
               record: Callable[[dict, dict], str], checkpoint_every: int, bar: StageProgress,
               count: Callable[[dict], int]) -> dict:
    """Calls `algo.train()` until `is_finished(progress)`.

    `record(progress, result)` updates progress (and logs the iteration's metrics) and
    returns what `bar` shows beside `count(progress)`. The bar moves after the iteration's
    checkpoint, when one is due, is saved: with `checkpoint_every` 1 an iteration's line means
    it is on disk (the tests kill runs on such lines).
    """
    iterations_since_save = 0
    while not is_finished(progress):
        iteration = progress.get("iteration", 0) + 1
        try:
            result = algo.train()
        except Exception as err:
            text = str(err).strip()
            detail = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
            print(f"ERROR: {stage.name} stage failed in training iteration {iteration} "
                  f"({detail}); {stage.latest_checkpoint_note()}. Re-run the same command to resume from it.",
                  file=sys.stderr, flush=True)
            raise
        progress["iteration"] = iteration
        info = record(progress, result)
        iterations_since_save += 1
        if iterations_since_save >= checkpoint_every or is_finished(progress):
            stage.save_checkpoint(algo, progress)
            iterations_since_save = 0
        bar.update(count(progress), info)
    return progress
