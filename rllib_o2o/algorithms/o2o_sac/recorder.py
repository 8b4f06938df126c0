"""The collect stage's recorder: every transition O2OSAC samples, in the dataset schema (medium-replay data)."""

from __future__ import annotations

import numpy as np


class TransitionRecorder:
    """Episode chunks as sampled, in env units, numbered by episode in order of first appearance."""

    def __init__(self):
        self._chunks: list[dict] = []
        self._episode_ids: dict[str, int] = {}

    def add(self, episode, observations: np.ndarray, n: int) -> None:
        """The first `n` steps of an episode chunk; `observations`: its n + 1 observations."""
        eps = self._episode_ids.setdefault(episode.id_, len(self._episode_ids))
        flags = np.zeros(n, bool)
        terminateds, truncateds = flags.copy(), flags.copy()
        terminateds[-1], truncateds[-1] = episode.is_terminated, episode.is_truncated
        self._chunks.append({
            "obs": observations[:-1].reshape(n, -1),
            "actions": np.asarray(episode.get_actions(slice(0, n)), np.float32).reshape(n, -1),
            "rewards": np.asarray(episode.get_rewards(slice(0, n)), np.float32),
            "new_obs": observations[1:].reshape(n, -1),
            "terminateds": terminateds,
            "truncateds": truncateds,
            "eps_id": np.full(n, eps, np.int64),
            "t": episode.t_started + np.arange(n, dtype=np.int64),
        })

    def transitions(self) -> dict[str, np.ndarray]:
        """Everything recorded, as columns; unfinished episodes end truncated."""
        columns = {k: np.concatenate([c[k] for c in self._chunks]) for k in self._chunks[0]}
        last_row = {eps: i for i, eps in enumerate(columns["eps_id"])}
        idx = np.fromiter(last_row.values(), dtype=np.int64)
        columns["truncateds"][idx] |= ~columns["terminateds"][idx]
        return columns
