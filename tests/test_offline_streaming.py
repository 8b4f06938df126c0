"""Offline datasets above `offline_buffer_max_rows` are streamed from Ray Data instead of loaded."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import ray

from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
from rllib_o2o.algorithms.o2o_sac.updates import SACMLUpdate
from rllib_o2o.data.location import NODE_ID_LABEL, ray_data_path, ray_data_read_args
from rllib_o2o.replay import FlatReplayBuffer, StreamingOfflineSampler

pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def offline_algo(dataset_dir, max_rows):
    return (
        O2OSACConfig()
        .environment("Pendulum-v1")
        .offline_data(input_=[ray_data_path(dataset_dir)], input_read_method_kwargs=ray_data_read_args(dataset_dir))
        .o2o(update=SACMLUpdate, updates_per_iteration=5, hidden=(32, 32), offline_buffer_max_rows=max_rows)
        .training(train_batch_size_per_learner=64)
        .debugging(seed=0)
        .build_algo()
    )


def test_a_dataset_over_the_limit_is_streamed_and_trains(local_ray, pendulum_dir, pendulum_data):
    algo = offline_algo(pendulum_dir, max_rows=100)  # the dataset has 450 rows
    try:
        assert isinstance(algo.replay, StreamingOfflineSampler)
        batch = algo.replay.sample(10, 64)  # 450 // 64 = 7 batches per epoch: this crosses into epoch 2
        assert batch["obs"].shape == (10, 64, 3) and batch["actions"].shape == (10, 64, 1)
        assert algo.replay._epoch == 1
        assert np.abs(batch["actions"]).max() <= 1.0  # normalised like the in-memory path
        rewards = set(np.round(pendulum_data[0]["rewards"], 5))
        assert set(np.round(batch["rewards"].ravel(), 5)) <= rewards  # rows of this dataset
        result = algo.train()
        assert result["learners"]["default_policy"]["num_updates_lifetime"] == 5
    finally:
        algo.stop()


def test_a_dataset_under_the_limit_is_loaded_once(local_ray, pendulum_dir):
    """...by read tasks pinned to the driver's node without Ray Data's deprecated local:// scheme."""
    node_id = ray.get_runtime_context().get_node_id()
    assert ray_data_read_args(pendulum_dir) == {"label_selector": {NODE_ID_LABEL: node_id}, "concurrency": 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        algo = offline_algo(pendulum_dir, max_rows=10_000)
    try:
        assert isinstance(algo.replay, FlatReplayBuffer) and len(algo.replay) == 450
        assert algo.logdir is None  # no ~/ray_results/<timestamp> left behind by the build
    finally:
        algo.stop()
    assert not [w for w in caught if "local://" in str(w.message)]
