"""Batched evaluation: the same seeded episodes as one-by-one evaluation, and RLlib's hook wired to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rllib_o2o.data.rollouts import evaluate_policy, run_episodes
from rllib_o2o.policy import ActorPolicy

HIDDEN = (8, 8)


def random_actor(obs_dim: int, act_dim: int, low, high, seed: int = 0) -> ActorPolicy:
    """A deterministic, non-linear policy (mean action of a randomly initialised actor)."""
    from rllib_o2o.networks import TanhGaussianActor

    torch.manual_seed(seed)
    state = {k: v.numpy().copy() for k, v in TanhGaussianActor(obs_dim, act_dim, HIDDEN).state_dict().items()}
    return ActorPolicy(state, obs_dim, act_dim, HIDDEN, low, high, seed=None)


@pytest.mark.parametrize("num_envs", [2, 3, 5, 8])
def test_side_by_side_episodes_equal_one_by_one_episodes(num_envs):
    policy = random_actor(3, 1, [-2.0], [2.0])
    one_by_one, lengths = run_episodes("Pendulum-v1", policy, 5, seed=3, max_episode_steps=60)
    batched, batched_lengths = run_episodes("Pendulum-v1", policy, 5, seed=3, max_episode_steps=60,
                                            num_envs=num_envs)
    np.testing.assert_array_equal(batched_lengths, lengths)
    assert (lengths == 60).all()
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)
    assert len(np.unique(one_by_one)) == 5


def test_episodes_of_uneven_length_keep_their_seeds_when_envs_are_reused():
    """Hopper falls after a seed-dependent number of steps: a freed env takes the next episode's seed."""
    policy = lambda obs: np.zeros((len(obs), 3))  # noqa: E731 - a batch policy: [k, 11] -> [k, 3]
    returns, lengths = run_episodes("Hopper-v5", policy, 4, seed=10)
    batched, batched_lengths = run_episodes("Hopper-v5", policy, 4, seed=10, num_envs=2)
    np.testing.assert_array_equal(batched_lengths, lengths)
    np.testing.assert_allclose(batched, returns, rtol=1e-9)
    tail, tail_lengths = run_episodes("Hopper-v5", policy, 2, seed=12, num_envs=2)  # episodes 2 and 3 alone
    np.testing.assert_array_equal(tail_lengths, lengths[2:])
    np.testing.assert_allclose(tail, returns[2:], rtol=1e-9)


def test_actions_are_clipped_to_the_action_space():
    wild = run_episodes("Pendulum-v1", lambda obs: np.full((len(obs), 1), 50.0), 2, seed=0,
                        max_episode_steps=20, num_envs=2)[0]
    at_bound = run_episodes("Pendulum-v1", lambda obs: np.full((len(obs), 1), 2.0), 2, seed=0,
                            max_episode_steps=20, num_envs=2)[0]
    np.testing.assert_array_equal(wild, at_bound)


@pytest.mark.parametrize("bad", [{"num_episodes": 0}, {"num_envs": 0}])
def test_counts_must_be_positive(bad):
    args = {"num_episodes": 2, "num_envs": 1} | bad
    with pytest.raises(ValueError, match="must be >= 1"):
        run_episodes("Pendulum-v1", lambda obs: np.zeros((len(obs), 1)), args["num_episodes"], 0,
                     num_envs=args["num_envs"])


def test_evaluation_seeds_differ_between_run_seeds():
    from rllib_o2o.algorithms.o2o_sac.evaluation import evaluation_seed

    assert [evaluation_seed(s) for s in (0, 1, 2)] == [10_000, 20_000, 30_000]


@pytest.mark.slow
def test_the_online_stage_evaluates_the_learners_actor_on_the_runs_evaluation_seeds(ray_session):
    """algo.evaluate() through the stage's config: the learner's mean action on episodes
    evaluation_seed(seed) + i, the same returns as one-by-one evaluation, and torch's global
    generator (the training's random stream) left as it was."""
    from rllib_o2o.algorithms.o2o_sac.evaluation import batched_evaluation, evaluation_seed
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.online import online_config

    cfg = PipelineConfig(env="Pendulum-v1", seed=7, eval_episodes=3, hidden=list(HIDDEN), num_env_runners=0,
                         max_episode_steps=50, torch_threads=1)
    config = online_config(cfg, get_preset("medium"))
    assert config.custom_evaluation_function is batched_evaluation
    algo = config.build_algo()
    try:
        weights = algo.call_learner(lambda learner: learner.get_module_weights())
        rng = torch.get_rng_state()
        result = algo.evaluate()
        assert torch.equal(torch.get_rng_state(), rng)
    finally:
        algo.stop()
    policy = ActorPolicy.from_module_weights(weights, obs_dim=3, act_dim=1, hidden=HIDDEN, low=[-2.0],
                                             high=[2.0], seed=None)
    expected = evaluate_policy("Pendulum-v1", policy, 3, evaluation_seed(7), max_episode_steps=50)
    runners = result["env_runners"]
    assert runners["num_episodes"] == 3 and runners["episode_len_mean"] == 50
    assert runners["episode_return_mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert runners["episode_return_min"] == pytest.approx(expected.min(), rel=1e-5)
