"""RLlib's own offline API (BC, new API stack) reads a dataset written by write_dataset."""

from __future__ import annotations

import gc

import gymnasium as gym
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    gc.collect()  # closes Ray Data iterators while Ray is still up
    ray.shutdown()


def test_rllib_bc_trains_on_written_dataset(ray_local, pendulum_dir):
    from ray.rllib.algorithms.bc import BCConfig

    env = gym.make("Pendulum-v1")
    config = (
        BCConfig()
        .environment(observation_space=env.observation_space, action_space=env.action_space)
        .offline_data(
            # The directory, not the file list: Ray 2.60 resolves several paths in
            # parallel threads that race on fsspec's http import when aiohttp is absent.
            input_=[str(pendulum_dir)],
            dataset_num_iters_per_learner=1,
            # 2 CPUs: one Ray Data map actor, short prefetch, or the pipeline can starve.
            map_batches_kwargs={"concurrency": 1, "num_cpus": 1},
            iter_batches_kwargs={"prefetch_batches": 1},
        )
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=64)
    )
    algo = config.build()
    try:
        for _ in range(2):
            result = algo.train()
    finally:
        algo.stop()
    learners = result["learners"]
    assert learners["__all_modules__"]["num_env_steps_trained_lifetime"] == 128
    assert learners["default_policy"]["policy_loss"] == pytest.approx(
        learners["default_policy"]["total_loss"])
    assert learners["default_policy"]["module_train_batch_size_mean"] == 64
