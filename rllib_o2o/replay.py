"""Flat, preallocated transition storage for the SAC-family learner.

RLlib's episode replay buffers rebuild batches from episode objects on every
sample, which costs more than the update itself at batch 256. Transitions here
live in one set of numpy arrays; sampling is a single fancy-index per column.
Actions are stored normalised to [-1, 1] (the policy's own space). Two samplers draw such
batches from data held elsewhere: `RowSampler` (arrays in Ray's object store) and
`StreamingOfflineSampler` (an offline dataset too large for memory, streamed by Ray Data).
"""

from __future__ import annotations

import numpy as np

from rllib_o2o.maths import offline_rows_per_batch

BATCH_KEYS = ("obs", "actions", "rewards", "new_obs", "terminateds")


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps env-unit actions into [-1, 1], the space the tanh policy lives in."""
    scaled = 2.0 * (actions - low) / (high - low) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def buffer_columns(tr: dict[str, np.ndarray], low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """Rows in the project's dataset schema (env-unit actions, bool ends) in the buffer's layout:
    BATCH_KEYS, actions normalised to [-1, 1], terminateds as float32."""
    return {"obs": tr["obs"], "actions": normalize_actions(tr["actions"], low, high), "rewards": tr["rewards"],
            "new_obs": tr["new_obs"], "terminateds": tr["terminateds"].astype(np.float32)}


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

    def add(self, obs, actions, rewards, new_obs, terminateds) -> np.ndarray:
        """Writes the rows; returns the indices they were written to."""
        n = len(rewards)
        if n == 0:
            return np.zeros(0, np.int64)
        if n > self.capacity - self.num_protected:
            raise ValueError(f"{n} transitions do not fit a buffer of capacity {self.capacity}")
        idx = self._next_indices(n)
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.new_obs[idx] = new_obs
        self.terminateds[idx] = terminateds
        self.size = min(self.size + n, self.capacity)
        return idx

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
        add(**buffer_columns(tr, low, high))

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


class SymmetricReplayBuffer(FlatReplayBuffer):
    """RLPD's symmetric sampling (Ball et al. 2023): the offline dataset (protected rows) and the
    online ring in one store, each batch drawn `maths.offline_rows_per_batch` rows uniformly from
    the offline rows and the rest uniformly from the online ones, whatever their counts."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0, offline_fraction: float = 0.5):
        super().__init__(capacity, obs_dim, act_dim, seed)
        offline_rows_per_batch(1, offline_fraction)  # a ValueError outside [0, 1)
        self.offline_fraction = offline_fraction

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """[U, B, ...] batches whose first floor(B f) rows are offline, the others online."""
        num_online_rows = self.size - self.num_protected
        if self.num_protected == 0 or num_online_rows == 0:
            raise RuntimeError(f"symmetric sampling needs offline and online rows; has {self.num_protected} "
                               f"offline and {num_online_rows} online")
        n_offline = offline_rows_per_batch(batch_size, self.offline_fraction)
        offline = self._rng.integers(0, self.num_protected, size=(num_batches, n_offline))
        online = self._rng.integers(self.num_protected, self.size, size=(num_batches, batch_size - n_offline))
        idx = np.concatenate([offline, online], axis=1)
        return {key: getattr(self, key)[idx] for key in BATCH_KEYS}


class RowSampler:
    """Uniform batches from chosen rows of a dataset held elsewhere (e.g. in Ray's object store), no copy.

    Draws what a FlatReplayBuffer filled with `rows` of `transitions`, in that order, with the same
    seed would draw (the same batches, bit for bit), but gathers each batch from `transitions` and
    normalises its actions then: the dataset is never copied whole.
    """

    def __init__(self, transitions: dict[str, np.ndarray], rows: np.ndarray, low: np.ndarray, high: np.ndarray,
                 seed: int = 0):
        if len(rows) == 0:
            raise ValueError("a RowSampler needs at least one row")
        self.transitions, self.rows, self.low, self.high = transitions, np.asarray(rows), low, high
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at `positions` (indices into `rows`, any shape) in the buffer's layout."""
        idx = self.rows[positions]
        return buffer_columns({key: self.transitions[key][idx] for key in BATCH_KEYS}, self.low, self.high)

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """`num_batches` stacked uniform batches: arrays of shape [U, B, ...]."""
        return self.gather(self._rng.integers(0, len(self.rows), size=(num_batches, batch_size)))


def offline_chunk_arrays(chunk: dict, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, ...]:
    """A Ray Data batch of the dataset schema as the learner's arrays (actions in [-1, 1])."""
    return (
        np.stack(chunk["obs"]).astype(np.float32),
        normalize_actions(np.stack(chunk["actions"]).astype(np.float32), low, high),
        chunk["rewards"].astype(np.float32),
        np.stack(chunk["new_obs"]).astype(np.float32),
        chunk["terminateds"].astype(np.float32),
    )


class StreamingOfflineSampler:
    """`FlatReplayBuffer.sample` for datasets larger than memory: epochs streamed from Ray Data.

    Batches come from `iter_batches` with a local shuffle buffer, restarting the stream at the
    end of each epoch, so memory holds the shuffle buffer, not the dataset.
    """

    def __init__(self, dataset, to_arrays, seed: int = 0, shuffle_rows: int = 100_000):
        self._dataset, self._to_arrays, self._seed, self._shuffle_rows = dataset, to_arrays, seed, shuffle_rows
        self._epoch, self._batches, self._batch_size = 0, None, None

    def _next_batch(self, batch_size: int) -> dict:
        while True:
            if self._batches is None or batch_size != self._batch_size:
                self._batch_size = batch_size
                self._batches = iter(self._dataset.iter_batches(
                    batch_size=batch_size, batch_format="numpy", drop_last=True,
                    local_shuffle_buffer_size=max(self._shuffle_rows, batch_size),
                    local_shuffle_seed=self._seed + self._epoch))
            try:
                return dict(zip(BATCH_KEYS, self._to_arrays(next(self._batches))))
            except StopIteration:
                self._epoch, self._batches = self._epoch + 1, None

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        batches = [self._next_batch(batch_size) for _ in range(num_batches)]
        return {k: np.stack([b[k] for b in batches]) for k in BATCH_KEYS}


class SumTree:
    """Binary sum tree over `capacity` non-negative priorities: O(log n) update and
    proportional sampling, both vectorised over many indices at once."""

    def __init__(self, capacity: int):
        self.num_leaves = 1 << max(0, int(capacity - 1).bit_length())
        self.nodes = np.zeros(2 * self.num_leaves, np.float64)  # root at 1, leaves at [L, 2L)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def values(self, idx: np.ndarray) -> np.ndarray:
        return self.nodes[self.num_leaves + np.asarray(idx)]

    def update(self, idx: np.ndarray, values: np.ndarray) -> None:
        pos = self.num_leaves + np.asarray(idx, np.int64).ravel()
        self.nodes[pos] = np.broadcast_to(np.asarray(values, np.float64).ravel(), pos.shape)
        while pos.size and pos[0] > 1:
            pos = np.unique(pos // 2)
            self.nodes[pos] = self.nodes[2 * pos] + self.nodes[2 * pos + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index whose prefix-sum interval contains each `mass` in [0, total)."""
        mass = np.array(mass, np.float64)
        pos = np.ones(mass.shape, np.int64)
        while self.num_leaves > 1 and pos.flat[0] < self.num_leaves:
            left = 2 * pos
            go_right = mass >= self.nodes[left]
            mass -= np.where(go_right, self.nodes[left], 0.0)
            pos = left + go_right
        return pos - self.num_leaves


class BalancedReplayBuffer(FlatReplayBuffer):
    """Balanced Replay's buffer (Lee et al. 2022): the offline dataset (protected rows)
    and online transitions in one store, sampled in proportion to a priority that the
    learner sets from the density ratio d_online / d_offline of each sampled row.

    Offline rows start at priority 1; each new online row enters at the largest
    priority seen, initially M f / ((1 - f) N) so that the first N online rows carry
    a fraction f of the sampling mass against M offline rows.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0,
                 initial_online_fraction: float = 0.5, online_rows_per_fraction: int = 1000):
        super().__init__(capacity, obs_dim, act_dim, seed)
        if not 0.0 < initial_online_fraction < 1.0:
            raise ValueError(f"initial_online_fraction must be in (0, 1), got {initial_online_fraction}")
        self.tree = SumTree(capacity)
        self.initial_online_fraction = initial_online_fraction
        self.online_rows_per_fraction = online_rows_per_fraction
        self.max_priority = 1.0

    def add(self, obs, actions, rewards, new_obs, terminateds) -> np.ndarray:
        idx = super().add(obs, actions, rewards, new_obs, terminateds)
        self.tree.update(idx, self.max_priority)
        return idx

    def add_protected(self, obs, actions, rewards, new_obs, terminateds) -> None:
        super().add_protected(obs, actions, rewards, new_obs, terminateds)
        self.tree.update(np.arange(self.num_protected), 1.0)
        f = self.initial_online_fraction
        self.max_priority = self.num_protected * f / ((1.0 - f) * self.online_rows_per_fraction)

    @property
    def num_online(self) -> int:
        return self.size - self.num_protected

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """Prioritised RL batches (stratified over the priority mass) plus, for the
        density-ratio estimator, uniform offline and online batches of the same size."""
        if self.num_protected == 0 or self.num_online == 0:
            raise RuntimeError(f"balanced replay needs offline and online rows; has {self.num_protected} "
                               f"offline and {self.num_online} online")
        shape = (num_batches, batch_size)
        segment = self.tree.total / batch_size
        mass = (np.arange(batch_size) + self._rng.random(shape)) * segment
        idx = np.minimum(self.tree.find(mass), self.size - 1)
        batch = {key: getattr(self, key)[idx] for key in BATCH_KEYS}
        batch["indices"] = idx
        offline = self._rng.integers(0, self.num_protected, size=shape)
        online = self._rng.integers(self.num_protected, self.size, size=shape)
        batch.update(offline_obs=self.obs[offline], offline_actions=self.actions[offline],
                     online_obs=self.obs[online], online_actions=self.actions[online])
        return batch

    def update_priorities(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        self.tree.update(idx, priorities)
        self.max_priority = max(self.max_priority, float(np.max(priorities)))

    def get_state(self) -> dict:
        state = super().get_state()
        state["priorities"] = self.tree.values(np.arange(self.size)).copy()
        state["max_priority"] = self.max_priority
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.tree = SumTree(self.capacity)
        self.tree.update(np.arange(self.size), state["priorities"])
        self.max_priority = state["max_priority"]
