"""Statistics of a comparison: regret per run, and aggregates across tasks and seeds with intervals.

Pure numpy, each function quoting its definition, tested by hand (tests/test_stats.py). The
aggregates follow Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice", the
rliable library): the interquartile mean of all runs' scores, with a percentile interval from a
bootstrap that resamples runs within each task (stratified), so every replicate keeps each task's
number of runs.
"""

from __future__ import annotations

import numpy as np


def regret(normalised_scores) -> float:
    """CORL's regret of one online run: mean over its evaluations of 1 - score / 100.

        regret = (1/N) sum_i (1 - s_i / 100)

    0 is a run at the expert reference from its first evaluation on; the evaluations are the online
    stage's curve, step 0 included.
    """
    scores = np.asarray(normalised_scores, dtype=float)
    if scores.size == 0:
        raise ValueError("regret needs at least one evaluation")
    return float(np.mean(1.0 - scores / 100.0))


def interquartile_mean(values) -> float:
    """The mean of the middle half: sort the n values, drop floor(n / 4) from each end, average the rest
    (scipy.stats.trim_mean(x, 0.25), rliable's IQM)."""
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    if ordered.size == 0:
        raise ValueError("interquartile_mean needs at least one value")
    cut = int(0.25 * ordered.size)
    return float(ordered[cut:ordered.size - cut].mean())


def stratified_bootstrap_interval(scores_by_task: dict, statistic=interquartile_mean, reps: int = 2000,
                                  confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(point estimate, low, high) of `statistic` over every run of every task.

    `scores_by_task`: task -> its runs' scores (one per seed). Each of `reps` replicates draws, for
    every task independently, as many runs as it has with replacement from its own runs, and
    applies `statistic` to all drawn scores together; (low, high) are the replicates'
    (1 - confidence) / 2 and (1 + confidence) / 2 percentiles.
    """
    tasks = [np.asarray(runs, dtype=float).ravel() for runs in scores_by_task.values()]
    if not tasks or any(runs.size == 0 for runs in tasks):
        raise ValueError("stratified_bootstrap_interval needs at least one run of every task")
    if not 0 < confidence < 1 or reps < 1:
        raise ValueError(f"confidence must be in (0, 1) and reps >= 1, got {confidence} and {reps}")
    rng = np.random.default_rng(seed)
    point = statistic(np.concatenate(tasks))
    replicates = np.array([statistic(np.concatenate([runs[rng.integers(0, runs.size, runs.size)] for runs in tasks]))
                           for _ in range(reps)])
    low, high = np.percentile(replicates, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(point), float(low), float(high)
