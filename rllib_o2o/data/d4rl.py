"""Import a D4RL-layout HDF5 file into the project's Parquet schema.

D4RL stores flat arrays (observations, actions, rewards, terminals, timeouts,
optionally next_observations). Episode boundaries come from terminals and
timeouts; a timeout is a truncation, never a termination.

Without next_observations the next observation is the following row, as in
D4RL's `qlearning_dataset`, with these rules:
- a terminal row is kept with new_obs = its own obs (finite, ignored by the target);
- a timeout row (not terminal) has no next obs in the file and is dropped; the row
  before it, whose next obs is real, becomes the episode's last and is marked truncated;
- the file's last row, unless terminal, is dropped the same way (its episode was
  cut by the end of the file).
With next_observations every row is kept, and a last row that is neither terminal
nor timeout is marked truncated. Either way every episode ends in a done row.
A row both terminal and timeout stays terminated (and truncated, as gymnasium reports).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from rllib_o2o.data.rollouts import env_meta, is_registered
from rllib_o2o.data.schema import DatasetError, DatasetMeta, Transitions, write_dataset
from rllib_o2o.data.scores import reference_scores
from rllib_o2o.data.validate import check_against_env

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The HDF5 arrays and the scalar `metadata/...` entries; any read failure -> DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        if not h5py.is_hdf5(path):
            raise DatasetError(f"{path}: not an HDF5 file")
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise DatasetError(f"{path}: missing HDF5 key(s) {', '.join(missing)}")
            has_next = isinstance(f.get("next_observations"), h5py.Dataset)
            keys = REQUIRED_KEYS + (("next_observations",) if has_next else ())
            arrays = {k: f[k][()] for k in keys}
            metadata = {}
            if isinstance(f.get("metadata"), h5py.Group):
                for name, item in f["metadata"].items():
                    if isinstance(item, h5py.Dataset) and item.shape == ():
                        value = item[()]
                        if isinstance(value, bytes):
                            value = value.decode(errors="replace")
                        metadata[name] = value.item() if hasattr(value, "item") else value
    except OSError as err:
        raise DatasetError(f"{path}: corrupt or truncated HDF5 file ({err})") from None
    return arrays, metadata


def _checked(a: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """The arrays with [N, 1] scalar columns flattened, after shape/length/finiteness checks."""
    a = {k: v[:, 0] if k in ("rewards", "terminals", "timeouts") and v.ndim == 2
         and v.shape[1] == 1 else v for k, v in a.items()}
    expected_ndim = {"observations": 2, "actions": 2, "next_observations": 2,
                     "rewards": 1, "terminals": 1, "timeouts": 1}
    for key, arr in a.items():
        if arr.ndim != expected_ndim[key]:
            raise DatasetError(f"{path}: {key} has shape {arr.shape}, expected "
                               f"{expected_ndim[key]}-D")
    lengths = {k: len(v) for k, v in a.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise DatasetError(f"{path}: arrays have different lengths ({detail})")
    if lengths["observations"] == 0:
        raise DatasetError(f"{path}: dataset is empty (0 rows)")
    if "next_observations" in a and a["next_observations"].shape != a["observations"].shape:
        raise DatasetError(f"{path}: next_observations shape {a['next_observations'].shape} "
                           f"differs from observations {a['observations'].shape}")
    for key in ("observations", "actions", "rewards", "next_observations"):
        if key not in a:
            continue
        if a[key].dtype.kind not in "fiu":
            raise DatasetError(f"{path}: {key} has dtype {a[key].dtype}, expected numbers")
        bad = ~np.isfinite(a[key])
        if bad.any():
            what = "NaN" if np.isnan(a[key]).any() else "inf"
            raise DatasetError(f"{path}: {key} has {what} values ({int(bad.sum())} entries, "
                               f"first at row {int(np.argwhere(bad)[0][0])})")
    return a


def to_transitions(a: dict[str, np.ndarray]) -> Transitions:
    """D4RL flat arrays -> Transitions, following the rules in the module docstring."""
    obs = a["observations"].astype(np.float32)
    n = len(obs)
    term = a["terminals"].astype(bool)
    tout = a["timeouts"].astype(bool)
    ends = term | tout
    ends[-1] = True
    episode = np.concatenate([[0], np.cumsum(ends[:-1])])
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])
    t = np.arange(n) - starts[episode]

    if "next_observations" in a:
        new_obs = a["next_observations"].astype(np.float32)
        keep = np.ones(n, bool)
        truncated = tout.copy()
        truncated[-1] |= not term[-1]
    else:
        new_obs = np.empty_like(obs)
        new_obs[:-1] = obs[1:]
        new_obs[term] = obs[term]
        keep = term | ~tout
        keep[-1] = term[-1]
        truncated = tout & term
        dropped = np.flatnonzero(~keep)
        prev = dropped[dropped > 0] - 1
        prev = prev[(episode[prev] == episode[prev + 1]) & keep[prev]]
        truncated[prev] = True

    _, eps_id = np.unique(episode[keep], return_inverse=True)
    return {
        "obs": obs[keep],
        "actions": a["actions"].astype(np.float32)[keep],
        "rewards": a["rewards"].astype(np.float32)[keep],
        "new_obs": new_obs[keep],
        "terminateds": term[keep],
        "truncateds": truncated[keep],
        "eps_id": eps_id.astype(np.int64),
        "t": t[keep].astype(np.int64),
    }


def import_d4rl(hdf5_path: str | os.PathLike, env_id: str, out_dir: str | os.PathLike,
                overwrite: bool = False) -> Path:
    """Converts a D4RL HDF5 file to a dataset directory; nothing is written on error.

    `env_id` is a gymnasium id (then the data is checked against its spaces) or a
    D4RL name such as "hopper-medium-v2" (recorded as is, spaces not checked).
    Reference scores: `metadata/ref_min_score` / `ref_max_score` in the file if
    present, else scores.reference_scores(env_id).
    """
    return write_dataset(out_dir, *load_d4rl(hdf5_path, env_id), overwrite=overwrite)


def load_d4rl(hdf5_path: str | os.PathLike, env_id: str) -> tuple[Transitions, DatasetMeta]:
    """Reads and checks a D4RL HDF5 file (as `import_d4rl` does) without writing anything."""
    path = Path(hdf5_path)
    arrays, metadata = _read_arrays(path)
    arrays = _checked(arrays, path)
    tr = to_transitions(arrays)
    if not len(tr["obs"]):
        raise DatasetError(f"{path}: no transition has a next observation (every episode "
                           "is a single timeout step)")
    act_dim = tr["actions"].shape[1]
    if is_registered(env_id):
        check_against_env(tr, env_id, str(path))
        meta = env_meta(env_id, source="d4rl")
    else:
        meta = DatasetMeta(
            env_id=env_id, obs_shape=(tr["obs"].shape[1],), action_shape=(act_dim,),
            action_low=tr["actions"].min(axis=0).tolist(),
            action_high=tr["actions"].max(axis=0).tolist(), source="d4rl")
    refs = reference_scores(env_id)
    if "ref_min_score" in metadata and "ref_max_score" in metadata:
        try:
            refs = (float(metadata["ref_min_score"]), float(metadata["ref_max_score"]))
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: metadata/ref_min_score and ref_max_score must be "
                               "numbers") from None
    meta.ref_min_score, meta.ref_max_score = refs if refs else (None, None)
    meta.generator = {"file": path.name, "has_next_observations": "next_observations" in arrays,
                      "metadata": metadata}
    return tr, meta
