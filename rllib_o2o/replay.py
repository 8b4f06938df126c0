"""Flat, preallocated transition storage for the SAC-family learner.

RLlib's episode replay buffers rebuild batches from episode objects on every
sample, which costs more than the update itself at batch 256. Transitions here
live in one set of numpy arrays; sampling is a single fancy-index per column.
Actions are stored normalised to [-1, 1] (the policy's own space).
"""

from __future__ import annotations

import numpy as np

BATCH_KEYS = ("obs", "actions", "rewards", "new_obs", "terminateds")


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps env-unit actions into [-1, 1], the space the tanh policy lives in."""
    scaled = 2.0 * (actions - low) / (high - low) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


class FlatReplayBuffer:
    """Ring buffer with uniform sampling and an optional protected seed segment.

    The first `num_protected` rows (e.g. offline trajectories seeded before
    online training) are never overwritten when the ring wraps around.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0):
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.new_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros((capacity,), np.float32)
        self.terminateds = np.zeros((capacity,), np.float32)
        self.size = 0
        self.num_protected = 0
        self._cursor = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, new_obs, terminateds) -> None:
        n = len(rewards)
        if n == 0:
            return
        if n > self.capacity - self.num_protected:
            raise ValueError(f"{n} transitions do not fit a buffer of capacity {self.capacity}")
        idx = self._next_indices(n)
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.new_obs[idx] = new_obs
        self.terminateds[idx] = terminateds
        self.size = min(self.size + n, self.capacity)

    def add_protected(self, obs, actions, rewards, new_obs, terminateds) -> None:
        """Adds rows that the ring never overwrites (only before any other add)."""
        if self.size != self.num_protected:
            raise RuntimeError("protected rows must be added before any other transitions")
        self.add(obs, actions, rewards, new_obs, terminateds)
        self.num_protected = self.size
        self._cursor = self.size

    def add_transitions(self, tr: dict[str, np.ndarray], low: np.ndarray, high: np.ndarray, protected: bool = False) -> None:
        """Adds a dataset in the project's schema (env-unit actions)."""
        add = self.add_protected if protected else self.add
        add(
            tr["obs"],
            normalize_actions(tr["actions"], low, high),
            tr["rewards"],
            tr["new_obs"],
            tr["terminateds"].astype(np.float32),
        )

    def _next_indices(self, n: int) -> np.ndarray:
        span = self.capacity - self.num_protected
        offsets = (self._cursor - self.num_protected + np.arange(n)) % span
        self._cursor = self.num_protected + (offsets[-1] + 1) % span
        return self.num_protected + offsets

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """Returns `num_batches` stacked uniform batches: arrays of shape [U, B, ...]."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = self._rng.integers(0, self.size, size=(num_batches, batch_size))
        return {key: getattr(self, key)[idx] for key in BATCH_KEYS}

    def get_state(self) -> dict:
        n = self.size
        return {
            "arrays": {key: getattr(self, key)[:n].copy() for key in BATCH_KEYS},
            "num_protected": self.num_protected,
            "cursor": self._cursor,
            "rng": self._rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> None:
        arrays = state["arrays"]
        n = len(arrays["rewards"])
        for key in BATCH_KEYS:
            getattr(self, key)[:n] = arrays[key]
        self.size = n
        self.num_protected = state["num_protected"]
        self._cursor = state["cursor"]
        self._rng.bit_generator.state = state["rng"]
