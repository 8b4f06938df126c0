"""Import a Minari dataset from local disk (optional extra: `pip install rllib-o2o[minari]`).

Minari stores whole episodes (observations has one more row than actions), so
new_obs is simply the next row and nothing is dropped. Reference scores come
from the dataset's own metadata when it has them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rllib_o2o.data.rollouts import env_meta, is_registered
from rllib_o2o.data.schema import DatasetError, DatasetMeta, Transitions, write_dataset
from rllib_o2o.data.scores import reference_scores
from rllib_o2o.data.sources import minari_root
from rllib_o2o.data.validate import check_against_env


def _data_dir(dataset_id_or_path: str | os.PathLike) -> Path:
    """The Minari `data/` directory (the one holding metadata.json) for an id or a path."""
    path = Path(dataset_id_or_path)
    if not path.is_dir():
        root = minari_root()
        path = root / str(dataset_id_or_path)
        if not path.is_dir():
            raise DatasetError(f"{dataset_id_or_path}: no such Minari dataset directory, nor a "
                               f"dataset id under {root} (set MINARI_DATASETS_PATH or "
                               f"run `minari download {dataset_id_or_path}`)")
    if (path / "data" / "metadata.json").is_file():
        path = path / "data"
    if not (path / "metadata.json").is_file():
        raise DatasetError(f"{path}: not a Minari dataset (no metadata.json)")
    return path


def _episodes_to_transitions(dataset, source: str) -> Transitions:
    parts = []
    for eps_id, ep in enumerate(dataset.iterate_episodes()):
        obs = np.asarray(ep.observations, dtype=np.float32)
        n = len(ep.rewards)
        if obs.shape[0] != n + 1:
            raise DatasetError(f"{source}: episode {ep.id} has {obs.shape[0]} observations "
                               f"for {n} steps (expected {n + 1})")
        obs = obs.reshape(n + 1, -1)
        truncated = np.asarray(ep.truncations, dtype=bool).copy()
        terminated = np.asarray(ep.terminations, dtype=bool)
        truncated[-1] |= not terminated[-1]  # an episode cut off by the end of collection
        parts.append({
            "obs": obs[:-1], "new_obs": obs[1:],
            "actions": np.asarray(ep.actions, dtype=np.float32).reshape(n, -1),
            "rewards": np.asarray(ep.rewards, dtype=np.float32),
            "terminateds": terminated, "truncateds": truncated,
            "eps_id": np.full(n, eps_id, np.int64), "t": np.arange(n, dtype=np.int64),
        })
    if not parts:
        raise DatasetError(f"{source}: dataset is empty (0 episodes)")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def import_minari(dataset_id_or_path: str | os.PathLike, out_dir: str | os.PathLike,
                  env_id: str | None = None, overwrite: bool = False) -> Path:
    """Converts a local Minari dataset to a dataset directory; nothing is written on error.

    `env_id` overrides the env recorded in the dataset (e.g. to check v4 data
    against a v5 env). Only Box observation and action spaces are supported.
    """
    try:
        import gymnasium as gym
        import minari
    except ImportError:
        raise DatasetError("importing Minari datasets needs the minari package: "
                           "pip install 'rllib-o2o[minari]'") from None
    data_dir = _data_dir(dataset_id_or_path)
    source = str(data_dir)
    unreadable = (ValueError, KeyError, OSError, AssertionError)
    try:
        dataset = minari.MinariDataset(data_dir)
    except unreadable as err:
        raise DatasetError(f"{source}: cannot read Minari dataset ({err})") from None
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(f"{source}: only Box observation and action spaces are supported "
                           f"(got {obs_space}, {act_space})")
    try:
        tr = _episodes_to_transitions(dataset, source)
    except DatasetError:
        raise
    except unreadable as err:
        raise DatasetError(f"{source}: cannot read Minari episodes ({err})") from None
    env_id = env_id or (dataset.env_spec.id if dataset.env_spec is not None else None)
    if is_registered(env_id):
        check_against_env(tr, env_id, source)
        meta = env_meta(env_id, source="minari")
    else:
        meta = DatasetMeta(
            env_id=env_id, obs_shape=tuple(obs_space.shape), action_shape=tuple(act_space.shape),
            action_low=act_space.low.astype(np.float64).ravel().tolist(),
            action_high=act_space.high.astype(np.float64).ravel().tolist(), source="minari")
    metadata = dataset.storage.metadata
    if metadata.get("ref_min_score") is not None and metadata.get("ref_max_score") is not None:
        refs = (float(metadata["ref_min_score"]), float(metadata["ref_max_score"]))
    else:
        refs = reference_scores(env_id) or reference_scores(dataset.id)
    meta.ref_min_score, meta.ref_max_score = refs if refs else (None, None)
    meta.generator = {"minari_dataset_id": dataset.id, "minari_version": dataset.minari_version,
                      "algorithm_name": metadata.get("algorithm_name")}
    return write_dataset(out_dir, tr, meta, overwrite=overwrite)
