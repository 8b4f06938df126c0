"""O2OEnvRunner: random warm-up actions follow the config's seed (RLlib seeds resets, not the action space)."""

import numpy as np

from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
from rllib_o2o.algorithms.o2o_sac.env_runner import O2OEnvRunner


def random_warmup_actions(seed: int, worker_index: int = 0) -> np.ndarray:
    config = O2OSACConfig().environment("Pendulum-v1").debugging(seed=seed)
    runner = O2OEnvRunner(config=config, worker_index=worker_index)
    try:
        episodes = runner.sample(num_timesteps=30, random_actions=True)
    finally:
        runner.stop()
    return np.concatenate([np.asarray(episode.get_actions()) for episode in episodes])


def test_random_warmup_actions_are_the_seeds():
    first = random_warmup_actions(3)
    assert first.shape == (30, 1)
    np.testing.assert_array_equal(random_warmup_actions(3), first)  # the same seed: the same actions
    assert not np.array_equal(random_warmup_actions(4), first)
    assert not np.array_equal(random_warmup_actions(3, worker_index=1), first)  # each runner its own stream
