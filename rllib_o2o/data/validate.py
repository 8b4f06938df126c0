"""`rllib-o2o validate`: check a dataset end to end and summarise it.

Reading already checks the schema against dataset.json; this adds the check
against the gymnasium env's own spaces, which is what catches data recorded
for a different env (or env version) than the one it will be fine-tuned in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gymnasium as gym

from rllib_o2o.data.fingerprint import content_fingerprint
from rllib_o2o.data.rollouts import env_meta, is_registered
from rllib_o2o.data.schema import (
    DatasetError,
    Transitions,
    check_transitions,
    episode_returns,
    read_dataset,
)
from rllib_o2o.data.scores import normalized_score, reference_scores
from rllib_o2o.suggest import did_you_mean


@dataclass
class DatasetStats:
    path: str
    env_id: str | None
    num_transitions: int
    num_episodes: int
    obs_dim: int
    act_dim: int
    return_mean: float
    return_min: float
    return_max: float
    return_std: float
    normalized_score_mean: float | None
    terminal_fraction: float
    truncated_fraction: float
    env_checked: bool  # False when env_id is not a registered gymnasium env
    fingerprint: str  # the rows' content (`data.fingerprint.content_fingerprint`): which data a result used


def check_against_env(tr: Transitions, env_id: str, source: str) -> None:
    """Raises DatasetError unless obs/action dims and action bounds fit `env_id`'s spaces."""
    check_transitions(tr, env_meta(env_id), source=f"{source} (checked against {env_id})")


def validate_dataset(path: str | os.PathLike, env_id: str | None = None) -> DatasetStats:
    """Reads and checks a dataset; `env_id` (else the one recorded) adds the env-space check.

    An explicit `env_id` must be a registered gymnasium env; a recorded one that
    is not (e.g. a D4RL name) only skips the env check.
    """
    tr, meta = read_dataset(path)
    if env_id is not None and not is_registered(env_id):
        raise DatasetError(f"{path}: --env {env_id} is not a registered gymnasium env"
                           f"{did_you_mean(env_id, gym.registry)}")
    env = env_id or meta.env_id
    checked = is_registered(env)
    if checked:
        check_against_env(tr, env, str(path))

    returns = episode_returns(tr)
    refs = ((meta.ref_min_score, meta.ref_max_score)
            if meta.ref_min_score is not None and meta.ref_max_score is not None
            else reference_scores(env))
    n = len(tr["obs"])
    return DatasetStats(
        path=str(path), env_id=env, num_transitions=n, num_episodes=len(returns),
        obs_dim=tr["obs"].shape[1], act_dim=tr["actions"].shape[1],
        return_mean=float(returns.mean()), return_min=float(returns.min()),
        return_max=float(returns.max()), return_std=float(returns.std()),
        normalized_score_mean=normalized_score(returns.mean(), *refs) if refs else None,
        terminal_fraction=float(tr["terminateds"].mean()),
        truncated_fraction=float(tr["truncateds"].mean()),
        env_checked=checked, fingerprint=content_fingerprint(tr))


def format_stats(stats: DatasetStats) -> str:
    env_line = stats.env_id or "(none recorded)"
    if not stats.env_checked:
        env_line += "  [not a registered gymnasium env: spaces not checked]"
    score = ("n/a (no reference scores)" if stats.normalized_score_mean is None
             else f"{stats.normalized_score_mean:.1f}")
    return "\n".join([
        f"dataset      {stats.path}: OK",
        f"env          {env_line}",
        f"transitions  {stats.num_transitions}  episodes {stats.num_episodes}",
        f"dims         obs {stats.obs_dim}  action {stats.act_dim}",
        f"returns      mean {stats.return_mean:.2f}  std {stats.return_std:.2f}  "
        f"min {stats.return_min:.2f}  max {stats.return_max:.2f}",
        f"norm. score  {score} (mean episode return)",
        f"ends         terminated {100 * stats.terminal_fraction:.2f}% of rows, "
        f"truncated {100 * stats.truncated_fraction:.2f}%",
        f"content      {stats.fingerprint} (fingerprint of the rows)",
    ])
