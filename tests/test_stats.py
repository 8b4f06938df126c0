"""rllib_o2o.stats against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_o2o.stats import interquartile_mean, regret, stratified_bootstrap_interval


def test_regret_by_hand():
    # 1 - s/100 for s = 0, 50, 100, 150: 1, 0.5, 0, -0.5 -> mean 0.25
    assert regret([0.0, 50.0, 100.0, 150.0]) == pytest.approx(0.25)
    assert regret([100.0]) == 0.0
    with pytest.raises(ValueError):
        regret([])


def test_interquartile_mean_by_hand():
    # n = 8: drop 2 from each end of 1..8 -> mean(3, 4, 5, 6) = 4.5
    assert interquartile_mean([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # n = 5: drop floor(1.25) = 1 from each end of (-100, 1, 2, 3, 1000) -> mean(1, 2, 3) = 2
    assert interquartile_mean([1000, 2, -100, 3, 1]) == pytest.approx(2.0)
    # n = 3: floor(0.75) = 0 dropped -> the plain mean
    assert interquartile_mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert interquartile_mean(np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(2.5)  # n = 4: mean(2, 3)


def test_one_run_per_task_leaves_nothing_to_resample():
    """Stratified: each task draws from its own runs only, so with one run per task every replicate is
    the original sample (an unstratified bootstrap would draw e.g. task a's run twice)."""
    point, low, high = stratified_bootstrap_interval({"a": [10.0], "b": [50.0], "c": [90.0]}, reps=200)
    assert point == low == high == pytest.approx(50.0)  # IQM of (10, 50, 90), n = 3: the mean


def test_interval_brackets_the_point_and_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few = {"a": rng.normal(40, 10, 3), "b": rng.normal(60, 10, 3)}
    many = {"a": rng.normal(40, 10, 100), "b": rng.normal(60, 10, 100)}
    for scores in (few, many):
        point, low, high = stratified_bootstrap_interval(scores, reps=500, seed=3)
        assert low <= point <= high
    (_, low_few, high_few), (_, low_many, high_many) = (stratified_bootstrap_interval(s, reps=500, seed=3)
                                                         for s in (few, many))
    assert high_many - low_many < high_few - low_few
    assert stratified_bootstrap_interval(few, reps=500, seed=3) == stratified_bootstrap_interval(few, reps=500, seed=3)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        stratified_bootstrap_interval({})
    with pytest.raises(ValueError):
        stratified_bootstrap_interval({"a": []})
    with pytest.raises(ValueError):
        stratified_bootstrap_interval({"a": [1.0]}, confidence=1.0)
