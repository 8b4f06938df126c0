"""What the stages share: their contract, the resumable training loop and the evaluation helpers.

A stage is an object with `role` (the key of its summary in a run's results), `stage_dir(ctx)`
(its `rundir.stage.StageDir`: checkpoints, DONE.json, uploads) and `run(ctx, io)`, which takes
its inputs from the run's `context.RunContext` and the run directory, writes its outputs and
DONE.json there, and returns its summary (at once, when DONE.json is there already).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from ray.rllib.utils.metrics import LEARNER_RESULTS  # where `algo.train()` keeps the learners' losses and values

from rllib_o2o.console import Console, StageProgress
from rllib_o2o.data.shared import SharedDataset
from rllib_o2o.metrics_log import MetricsLog
from rllib_o2o.nonfinite import NonFiniteError, describe, non_finite
from rllib_o2o.rundir.stage import StageDir


@dataclass
class StageIO:
    """What the stages of one invocation write through: the console, the metrics log (TensorBoard,
    W&B) and the dataset's shared copy (read once, by the first stage that needs it)."""

    console: Console
    metrics: MetricsLog
    dataset: SharedDataset


def evaluation_return(result: dict) -> float | None:
    """Mean evaluation return from `train()` results or from `evaluate()`'s own dict."""
    evaluation = result.get("evaluation", result)
    return evaluation.get("env_runners", {}).get("episode_return_mean")


def format_eval(ret: float, score: float | None) -> str:
    return f"return {ret:.1f}" + ("" if score is None else f" score {score:.1f}")


def check_finite(result: dict, stage: StageDir, iteration: int) -> None:
    """Raises NonFiniteError when a learner number of the iteration's `result` is NaN or infinite."""
    found = non_finite(result.get(LEARNER_RESULTS, {}), f"{LEARNER_RESULTS}/")
    if found:
        raise NonFiniteError(f"{stage.name} stage: {describe(found)} in training iteration {iteration}; stopped "
                             f"before saving it, {stage.latest_checkpoint_note()}")


def train_loop(algo, stage: StageDir, progress: dict, is_finished: Callable[[dict], bool],
               record: Callable[[dict, dict], str], checkpoint_every: int, bar: StageProgress,
               count: Callable[[dict], int]) -> dict:
    """Calls `algo.train()` until `is_finished(progress)`.

    `record(progress, result)` updates progress (and logs the iteration's metrics) and
    returns what `bar` shows beside `count(progress)`. The bar moves after the iteration's
    checkpoint, when one is due, is saved: with `checkpoint_every` 1 an iteration's line means
    it is on disk (the tests kill runs on such lines). An iteration whose learner results hold a
    NaN or infinite number stops the stage (NonFiniteError) before it is recorded or saved.
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
        check_finite(result, stage, iteration)
        progress["iteration"] = iteration
        info = record(progress, result)
        iterations_since_save += 1
        if iterations_since_save >= checkpoint_every or is_finished(progress):
            stage.save_checkpoint(algo, progress)
            iterations_since_save = 0
        bar.update(count(progress), info)
    return progress
