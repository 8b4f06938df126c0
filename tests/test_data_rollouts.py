"""Collecting transitions and evaluating policies in gymnasium envs."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_o2o.data.rollouts import collect_transitions, evaluate_policy
from rllib_o2o.data.schema import check_transitions


def test_random_pendulum_shapes_and_episodes(pendulum_data):
    tr, meta = pendulum_data
    check_transitions(tr, meta)
    assert tr["obs"].shape == tr["new_obs"].shape == (450, 3)
    assert tr["actions"].shape == (450, 1)
    assert tr["obs"].dtype == tr["actions"].dtype == tr["rewards"].dtype == np.float32
    np.testing.assert_array_equal(tr["t"], np.r_[np.arange(200), np.arange(200), np.arange(50)])
    np.testing.assert_array_equal(tr["eps_id"], np.repeat([0, 1, 2], [200, 200, 50]))
    # Pendulum never terminates; the 200-step time limit and the end of collection truncate.
    assert not tr["terminateds"].any()
    np.testing.assert_array_equal(np.flatnonzero(tr["truncateds"]), [199, 399, 449])
    # Within an episode each next observation is the following row's observation.
    same_episode = ~tr["truncateds"][:-1]
    np.testing.assert_array_equal(tr["new_obs"][:-1][same_episode], tr["obs"][1:][same_episode])


def test_seeded_and_reproducible(pendulum_data):
    again = collect_transitions("Pendulum-v1", 450, seed=0)
    for name, value in pendulum_data[0].items():
        np.testing.assert_array_equal(again[name], value)
    other = collect_transitions("Pendulum-v1", 450, seed=1)
    assert not np.array_equal(other["actions"], again["actions"])


def test_policy_actions_clipped_and_progress():
    messages = []
    tr = collect_transitions("Pendulum-v1", 30, policy=lambda obs: np.array([5.0]),
                             max_episode_steps=10, progress=messages.append)
    np.testing.assert_array_equal(tr["actions"], np.full((30, 1), 2.0, np.float32))
    np.testing.assert_array_equal(np.flatnonzero(tr["truncateds"]), [9, 19, 29])
    assert messages[-1] == "Pendulum-v1: 30/30 transitions, 3 episodes done"


def test_terminating_env_keeps_termination_separate():
    tr = collect_transitions("Hopper-v5", 300, seed=0)  # random Hopper falls within ~30 steps
    ends = np.flatnonzero(tr["terminateds"])
    assert len(ends) > 3 and not tr["truncateds"][ends].any()
    ends = ends[ends < 299]
    np.testing.assert_array_equal(tr["t"][ends + 1], 0)  # a new episode starts after each
    np.testing.assert_array_equal(np.diff(tr["eps_id"])[ends], 1)


def test_evaluate_policy():
    returns = evaluate_policy("Pendulum-v1", lambda obs: np.zeros((len(obs), 1)), num_episodes=3, seed=0)
    assert returns.shape == (3,) and (returns < 0).all()
    again = evaluate_policy("Pendulum-v1", lambda obs: np.zeros((len(obs), 1)), num_episodes=3, seed=0)
    np.testing.assert_array_equal(returns, again)
    assert len(np.unique(returns)) == 3  # episode i is reset with seed + i


def test_num_transitions_must_be_positive():
    with pytest.raises(ValueError):
        collect_transitions("Pendulum-v1", 0)
