"""O2OSAC end to end through RLlib, on Ray: the online loop's warm-up and update ratio, checkpoints,
a remote learner, Balanced Replay's priorities, and the online stage's sampling in fragments.

The learner's update itself is checked against hand-written maths without Ray in test_updates.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from rllib_o2o.algorithms.o2o_sac.updates import BalancedReplayUpdate, RLPDUpdate

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # conftest.py


def test_warm_up_collects_without_updating_then_updates_at_the_ratio_with_one_actor_step_per_env_step(ray_session):
    """RLPD's and WSRL's online loop: `warmup_env_steps` of collection by the start policy with no
    update, then `updates_per_env_step` critic updates and one actor step per env step."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    algo = (
        O2OSACConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, rollout_fragment_length=50)
        .o2o(update=RLPDUpdate, env_steps_per_iteration=100, warmup_env_steps=200, updates_per_env_step=3.0,
             policy_update_interval=3, num_critics=4, critic_target_members=2, critic_layer_norm=True,
             hidden=(16, 16), replay_capacity=10_000)
        .training(train_batch_size_per_learner=16, num_steps_sampled_before_learning_starts=16)
        .debugging(seed=0)
    ).build_algo()
    try:
        algo.replay.add_protected(*(np.zeros((50, 3), np.float32), np.zeros((50, 1), np.float32),
                                    np.zeros(50, np.float32), np.zeros((50, 3), np.float32), np.zeros(50, np.float32)))
        weights = algo.call_learner(lambda learner: learner.get_module_weights())
        assert weights["critic.norm_gains.0"].shape == (4, 1, 16)
        for _ in range(2):  # env steps 0..200: the warm-up
            algo.train()
        assert algo.env_steps_sampled == 200 and algo.lifetime_updates() == 0
        algo.train()  # env steps 200..300: 3 critic updates each, one actor step each
        assert algo.env_steps_sampled == 300 and algo.lifetime_updates() == 300
        steps = algo.call_learner(lambda learner: {name: learner.get_optimizer("default_policy", name)
                                                   .state_dict()["state"][0]["step"].item()
                                                   for name in ("critic", "actor", "alpha")})
        assert steps == {"critic": 300, "actor": 100, "alpha": 100}
    finally:
        algo.stop()


@pytest.mark.slow
def test_o2o_sac_trains_checkpoints_and_restores(ray_session, tmp_path):
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    fragment, learning_starts = 50, 100

    def config():
        return (
            O2OSACConfig()
            .environment("Pendulum-v1")
            .env_runners(num_env_runners=0, rollout_fragment_length=fragment)
            .o2o(env_steps_per_iteration=200, hidden=(32, 32), replay_capacity=10_000)
            .training(train_batch_size_per_learner=64, num_steps_sampled_before_learning_starts=learning_starts)
            .debugging(seed=0)
        )

    algo = config().build_algo()
    other = None
    try:
        weights = algo.call_learner(lambda learner: learner.get_module_weights())
        assert weights["critic.weights.0"].shape == (2, 3 + 1, 32)  # hidden reached the module
        assert weights["actor.head.weight"].shape == (2, 32)
        results = [algo.train() for _ in range(2)]
        learner = results[-1]["learners"]["default_policy"]
        for key in ("critic_loss", "actor_loss", "alpha", "q_mean", "log_prob", "num_updates_lifetime"):
            assert key in learner and np.isfinite(learner[key]), key
        assert algo.env_steps_sampled == 400
        assert len(algo.replay) == 400
        # UTD 1: one update per env step from the fragment that filled the buffer to learning_starts on.
        updates = algo.call_learner(lambda learner: int(learner.module["default_policy"].num_updates))
        assert learner["num_updates_lifetime"] == updates == 400 - (learning_starts - fragment)

        path = tmp_path / "ckpt"
        algo.save_to_path(str(path))
        other = config().build_algo()
        other.restore_from_path(str(path))
        a = algo.call_learner(lambda learner: learner.get_module_weights())
        b = other.call_learner(lambda learner: learner.get_module_weights())
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert other.env_steps_sampled == algo.env_steps_sampled
        assert len(other.replay) == len(algo.replay)
        assert other.replay.num_protected == algo.replay.num_protected
        sa, sb = algo.replay.sample(2, 16), other.replay.sample(2, 16)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])
    finally:
        algo.stop()
        if other is not None:
            other.stop()


def test_o2o_sac_with_one_remote_learner_trains_and_syncs_the_env_runners(ray_session):
    """num_learners=1: the learner is a Ray actor; batches travel to it, weights come back to sampling."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    algo = (
        O2OSACConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, rollout_fragment_length=50)
        .learners(num_learners=1, num_cpus_per_learner=0)
        .o2o(env_steps_per_iteration=200, hidden=(32, 32), replay_capacity=10_000)
        .training(train_batch_size_per_learner=64, num_steps_sampled_before_learning_starts=100)
        .debugging(seed=0)
        .build_algo()
    )
    try:
        assert not algo.learner_group.is_local
        before = algo.call_learner(lambda learner: learner.get_module_weights())
        result = algo.train()
        after = algo.call_learner(lambda learner: learner.get_module_weights())
        assert result["learners"]["default_policy"]["num_updates_lifetime"] > 0
        assert not np.array_equal(before["actor.head.weight"], after["actor.head.weight"])
        sampler = algo.env_runner.module.get_state()
        np.testing.assert_allclose(np.asarray(sampler["actor.head.weight"]), after["actor.head.weight"])
    finally:
        algo.stop()


@pytest.mark.slow
def test_o2o_sac_balanced_replay_writes_learned_priorities_back_and_checkpoints_them(ray_session, tmp_path):
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    def config():
        return (
            O2OSACConfig()
            .environment("Pendulum-v1")
            .env_runners(num_env_runners=0, rollout_fragment_length=50)
            .o2o(update=BalancedReplayUpdate, env_steps_per_iteration=200, hidden=(32, 32), replay_capacity=2_000)
            .training(train_batch_size_per_learner=64, num_steps_sampled_before_learning_starts=0)
            .debugging(seed=0)
        )

    rng = np.random.default_rng(0)
    offline = {"obs": rng.normal(size=(1000, 3)).astype(np.float32),
               "actions": rng.uniform(-2, 2, size=(1000, 1)).astype(np.float32),
               "rewards": rng.normal(size=1000).astype(np.float32),
               "new_obs": rng.normal(size=(1000, 3)).astype(np.float32),
               "terminateds": np.zeros(1000, bool)}
    algo = config().build_algo()
    other = None
    try:
        assert "density_ratio.weights.0" in algo.call_learner(lambda learner: learner.get_module_weights())
        algo.replay.add_transitions(offline, np.array([-2.0], np.float32), np.array([2.0], np.float32),
                                    protected=True)
        initial = algo.replay.tree.values(np.arange(1000)).copy()
        np.testing.assert_array_equal(initial, 1.0)
        learner = algo.train()["learners"]["default_policy"]
        for key in ("density_loss", "density_ratio_offline", "density_ratio_online"):
            assert np.isfinite(learner[key]), key
        assert "priorities" not in learner  # written back to the buffer, not logged
        after = algo.replay.tree.values(np.arange(algo.replay.size))
        assert len(algo.replay) == 1200 and np.count_nonzero(after[:1000] != 1.0) > 100
        assert after.min() >= 1e-3 and after.max() <= max(1e3, algo.replay.max_priority)

        path = tmp_path / "ckpt"
        algo.save_to_path(str(path))
        other = config().build_algo()
        other.restore_from_path(str(path))
        np.testing.assert_array_equal(other.replay.tree.values(np.arange(1200)), after)
        assert other.replay.max_priority == algo.replay.max_priority
    finally:
        algo.stop()
        if other is not None:
            other.stop()


def _tiny_online_config(**sampling):
    """The online stage's config on Pendulum (100-step episodes, tiny nets), learning from the 100th step."""
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.online import online_config

    cfg = PipelineConfig(env="Pendulum-v1", hidden=[16, 16], batch_size=32, max_episode_steps=100, torch_threads=1,
                         **sampling)
    return online_config(cfg, get_preset("medium")).training(num_steps_sampled_before_learning_starts=100)


def test_the_online_stage_samples_in_fragments_of_rollout_fragment_length(ray_session):
    """`rollout_fragment_length` reaches RLlib: each sample call takes that many env steps, and the
    learner owes one update per step once learning starts (1: an update after every step)."""
    from rllib_o2o.pipeline import PipelineConfig

    assert PipelineConfig().rollout_fragment_length == 50
    with pytest.raises(ValueError, match="rollout_fragment_length"):
        PipelineConfig(rollout_fragment_length=0).validate()
    config = _tiny_online_config(rollout_fragment_length=1, num_envs_per_env_runner=1, eval_every=300)
    assert config.rollout_fragment_length == 1
    algo = config.build_algo()
    try:
        assert sum(len(e) for e in algo.env_runner.sample()) == 1
        algo.training_step()
        updates = algo.lifetime_updates()
    finally:
        algo.stop()
    assert updates == 300 - 100 + 1  # one per env step from the 100th on (the sample above was not learned)


def test_the_fragment_counts_env_steps_of_all_envs_of_an_env_runner():
    """rollout_fragment_length is env steps per sample call, whatever the number of envs: RLlib's
    per-env fragment is that divided by the envs, rounded up (by hand)."""
    from rllib_o2o.stages.online import fragment_per_env

    assert fragment_per_env(50, 1) == 50
    assert fragment_per_env(50, 10) == 5
    assert fragment_per_env(50, 4) == 13  # 12.5 rounded up: 52 steps per call
    assert fragment_per_env(1, 10) == 1


def test_vectorised_sampling_adds_exactly_the_iterations_env_steps(ray_session):
    """With 4 envs in lockstep a sample call takes 12 steps (3 each), so an iteration of 301 env steps
    ends 11 steps past its budget: those are held back and added first by the next iteration, and the
    replay buffer, the env-step count and the updates owed follow exactly 301 steps per iteration."""
    from rllib_o2o.pipeline import PipelineConfig

    assert PipelineConfig().num_envs_per_env_runner == 1
    with pytest.raises(ValueError, match="num_envs_per_env_runner"):
        PipelineConfig(num_envs_per_env_runner=0).validate()
    config = _tiny_online_config(num_envs_per_env_runner=4, rollout_fragment_length=10, eval_every=301)
    assert (config.num_envs_per_env_runner, config.rollout_fragment_length) == (4, 3)
    algo = config.build_algo()
    try:
        counts = []
        for _ in range(2):
            algo.training_step()
            updates = algo.lifetime_updates()
            held_back = 0 if algo._held_back is None else len(algo._held_back[2])
            counts.append((algo.env_steps_sampled, len(algo.replay), held_back, updates))
    finally:
        algo.stop()
    # 26 calls of 12 steps = 312 sampled for 301; then 11 held + 25 calls (300) = 311 for the next 301
    assert counts == [(301, 301, 11, 301 - 96), (602, 602, 10, 602 - 96)]
