"""The on-disk transition format: a directory of Parquet part files + dataset.json.

Column names are RLlib's offline column names, so the directory can be handed
straight to `AlgorithmConfig.offline_data(input_=[dir])`. Every function here
validates before it trusts: a bad file raises `DatasetError` with a one-line
message naming the file and the problem, and a failed write leaves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ("obs", "actions", "rewards", "new_obs", "terminateds", "truncateds", "eps_id", "t")
META_FILE = "dataset.json"
PART_GLOB = "part-*.parquet"
FORMAT_VERSION = 1
ACTION_TOLERANCE = 1e-5

Transitions = dict[str, np.ndarray]

# Column -> (numpy dtype kind accepted, canonical dtype, ndim).
_SPEC = {
    "obs": ("f", np.float32, 2),
    "actions": ("f", np.float32, 2),
    "rewards": ("f", np.float32, 1),
    "new_obs": ("f", np.float32, 2),
    "terminateds": ("b", np.bool_, 1),
    "truncateds": ("b", np.bool_, 1),
    "eps_id": ("iu", np.int64, 1),
    "t": ("iu", np.int64, 1),
}
_FLOAT_COLUMNS = ("obs", "actions", "rewards", "new_obs")
SOURCES = ("generated", "d4rl", "minari", "user")


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the problem on one line."""


@dataclass
class DatasetMeta:
    """What dataset.json records: shapes and bounds to check data against, provenance, scoring."""

    env_id: str | None
    obs_shape: tuple
    action_shape: tuple
    action_low: list[float]
    action_high: list[float]
    source: str
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    generator: dict = field(default_factory=dict)
    seed: int | None = None
    num_transitions: int = 0
    num_episodes: int = 0
    format_version: int = FORMAT_VERSION

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def act_dim(self) -> int:
        return int(np.prod(self.action_shape))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = META_FILE) -> "DatasetMeta":
        """Parses dataset.json; `source` names the file in errors."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{source}: not valid JSON ({err})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{source}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - raw.keys())
        if missing:
            raise DatasetError(f"{source}: missing field(s) {', '.join(missing)}")
        unknown = sorted(raw.keys() - names)
        if unknown:
            raise DatasetError(f"{source}: unknown field(s) {', '.join(unknown)}")
        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise DatasetError(f"{source}: format_version {version} is not supported "
                               f"(this version reads {FORMAT_VERSION})")
        try:
            raw["obs_shape"] = tuple(int(d) for d in raw["obs_shape"])
            raw["action_shape"] = tuple(int(d) for d in raw["action_shape"])
            raw["action_low"] = [float(x) for x in raw["action_low"]]
            raw["action_high"] = [float(x) for x in raw["action_high"]]
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{source}: bad shape or bounds field ({err})") from None
        return cls(**raw)


def check_transitions(tr: Transitions, meta: DatasetMeta | None = None,
                      source: str = "transitions") -> None:
    """Raises DatasetError unless `tr` is a well-formed, finite, non-empty batch.

    With `meta`, also checks the per-row dims and that actions lie within its
    bounds (tolerance ACTION_TOLERANCE, for float rounding at the edges).
    """
    if not isinstance(tr, dict):
        raise DatasetError(f"{source}: expected a dict of arrays, got {type(tr).__name__}")
    missing = [c for c in COLUMNS if c not in tr]
    if missing:
        raise DatasetError(f"{source}: missing column(s) {', '.join(missing)}")
    lengths = {c: len(tr[c]) for c in COLUMNS}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{c}={n}" for c, n in lengths.items())
        raise DatasetError(f"{source}: columns have different lengths ({detail})")
    if lengths["obs"] == 0:
        raise DatasetError(f"{source}: dataset is empty (0 transitions)")
    for name, (kinds, _, ndim) in _SPEC.items():
        arr = tr[name]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in kinds:
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DatasetError(f"{source}: column {name} has dtype {got}, expected "
                               f"{np.dtype(_SPEC[name][1]).name}")
        if arr.ndim != ndim:
            raise DatasetError(f"{source}: column {name} has shape {arr.shape}, expected {ndim}-D")
    if tr["new_obs"].shape != tr["obs"].shape:
        raise DatasetError(f"{source}: new_obs shape {tr['new_obs'].shape} differs from "
                           f"obs shape {tr['obs'].shape}")
    for name in _FLOAT_COLUMNS:
        bad = ~np.isfinite(tr[name])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            what = "NaN" if np.isnan(tr[name]).any() else "inf"
            raise DatasetError(f"{source}: column {name} has {what} values "
                               f"({int(bad.sum())} entries, first at row {row})")
    if (tr["t"] < 0).any():
        raise DatasetError(f"{source}: column t has negative step indices")
    if meta is not None:
        _check_against_meta(tr, meta, source)


def _check_against_meta(tr: Transitions, meta: DatasetMeta, source: str) -> None:
    obs_dim, act_dim = tr["obs"].shape[1], tr["actions"].shape[1]
    if obs_dim != meta.obs_dim:
        raise DatasetError(f"{source}: observations have {obs_dim} dims per row, expected "
                           f"{meta.obs_dim} (obs_shape {tuple(meta.obs_shape)})")
    if act_dim != meta.act_dim:
        raise DatasetError(f"{source}: actions have {act_dim} dims per row, expected "
                           f"{meta.act_dim} (action_shape {tuple(meta.action_shape)})")
    low = np.asarray(meta.action_low, dtype=np.float64)
    high = np.asarray(meta.action_high, dtype=np.float64)
    if low.shape != (act_dim,) or high.shape != (act_dim,):
        raise DatasetError(f"{source}: action bounds have {low.size}/{high.size} entries, "
                           f"expected {act_dim}")
    actions = tr["actions"].astype(np.float64)
    outside = (actions < low - ACTION_TOLERANCE) | (actions > high + ACTION_TOLERANCE)
    if outside.any():
        row, col = (int(i) for i in np.argwhere(outside)[0])
        raise DatasetError(f"{source}: actions outside the action space [{low.tolist()}, "
                           f"{high.tolist()}] in {int(outside.any(axis=1).sum())} rows "
                           f"(first: row {row}, dim {col}, value {actions[row, col]:.6g})")


def canonical(tr: Transitions, source: str = "transitions") -> Transitions:
    """Returns `tr` validated and cast to the canonical dtypes (float32, bool, int64)."""
    check_transitions(tr, source=source)
    out = {name: np.ascontiguousarray(tr[name], dtype=_SPEC[name][1]) for name in COLUMNS}
    check_transitions(out, source=source)  # float64 -> float32 can overflow to inf
    return out


def _to_table(tr: Transitions, lo: int, hi: int) -> pa.Table:
    def fixed(arr: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(arr[lo:hi].ravel()), arr.shape[1])

    return pa.table({
        "obs": fixed(tr["obs"]),
        "actions": fixed(tr["actions"]),
        "rewards": pa.array(tr["rewards"][lo:hi]),
        "new_obs": fixed(tr["new_obs"]),
        "terminateds": pa.array(tr["terminateds"][lo:hi]),
        "truncateds": pa.array(tr["truncateds"][lo:hi]),
        "eps_id": pa.array(tr["eps_id"][lo:hi]),
        "t": pa.array(tr["t"][lo:hi]),
    })


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_replaceable(path: Path) -> bool:
    """Only a dataset directory (or an empty one) may be replaced by overwrite=True."""
    return path.is_dir() and ((path / META_FILE).is_file() or not any(path.iterdir()))


def write_dataset(out_dir: str | os.PathLike, transitions: Transitions, meta: DatasetMeta,
                  rows_per_file: int = 100_000, overwrite: bool = False) -> Path:
    """Validates and writes a dataset atomically; returns its directory.

    Files go to a hidden temp directory beside `out_dir` that is renamed into
    place once everything (dataset.json last) is fsynced, so readers never see
    a half-written dataset and a crash leaves at most a `.<name>.tmp-*` folder.
    """
    out = Path(out_dir)
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be >= 1")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: already exists (pass overwrite to replace it)")
    if out.exists() and not _is_replaceable(out):
        raise DatasetError(f"{out}: exists and is not a dataset directory; refusing to replace it")
    if meta.source not in SOURCES:
        raise DatasetError(f"{out}: meta.source {meta.source!r} is not one of {', '.join(SOURCES)}")
    tr = canonical(transitions, source=str(out))
    check_transitions(tr, meta, source=str(out))
    n = len(tr["obs"])
    meta = dataclasses.replace(
        meta, obs_shape=tuple(meta.obs_shape), action_shape=tuple(meta.action_shape),
        action_low=[float(x) for x in meta.action_low],
        action_high=[float(x) for x in meta.action_high],
        num_transitions=n, num_episodes=int(np.unique(tr["eps_id"]).size),
        format_version=FORMAT_VERSION)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for part, lo in enumerate(range(0, n, rows_per_file)):
            path = tmp / f"part-{part:05d}.parquet"
            pq.write_table(_to_table(tr, lo, min(lo + rows_per_file, n)), path)
            _fsync(path)
        meta_path = tmp / META_FILE
        meta_path.write_text(meta.to_json() + "\n")
        _fsync(meta_path)
        _fsync(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}.old"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(path: str | os.PathLike) -> DatasetMeta:
    """Reads dataset.json of a dataset directory."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset directory")
    if not path.is_dir():
        raise DatasetError(f"{path}: not a dataset directory "
                           f"(expected Parquet files + {META_FILE})")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DatasetError(f"{path}: no {META_FILE} (incomplete or not a dataset directory)")
    return DatasetMeta.from_json(meta_path.read_text(), source=str(meta_path))


def dataset_files(path: str | os.PathLike) -> list[str]:
    """The dataset's Parquet part files, sorted (for RLlib's `input_`, pass the directory
    instead unless aiohttp is installed: see docs/data.md)."""
    read_meta(path)
    files = sorted(str(p) for p in Path(path).glob(PART_GLOB))
    if not files:
        raise DatasetError(f"{path}: no {PART_GLOB} files")
    return files


def _column_2d(col: pa.ChunkedArray, name: str, file: str) -> np.ndarray:
    """A (fixed-size or uniform variable-size) list column as a 2-D numpy array."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise DatasetError(f"{file}: column {name} has null values")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        sizes = np.diff(arr.offsets.to_numpy())
        if len(sizes) and (sizes != sizes[0]).any():
            raise DatasetError(f"{file}: column {name} has rows of different lengths")
        width = int(sizes[0]) if len(sizes) else 0
    else:
        raise DatasetError(f"{file}: column {name} has type {arr.type}, expected a list of floats")
    values = arr.flatten()
    if values.null_count:
        raise DatasetError(f"{file}: column {name} has null values")
    if not pa.types.is_floating(values.type):
        raise DatasetError(f"{file}: column {name} holds {values.type}, expected floats")
    return values.to_numpy(zero_copy_only=False).reshape(len(arr), width)


def _column_1d(col: pa.ChunkedArray, name: str, file: str) -> np.ndarray:
    arr = col.combine_chunks()
    if arr.null_count:
        raise DatasetError(f"{file}: column {name} has null values")
    if pa.types.is_nested(arr.type):
        raise DatasetError(f"{file}: column {name} has type {arr.type}, expected a scalar")
    return arr.to_numpy(zero_copy_only=False)


def read_dataset(path: str | os.PathLike) -> tuple[Transitions, DatasetMeta]:
    """Loads a whole dataset into numpy and validates it against its dataset.json."""
    meta = read_meta(path)
    tr = dict(read_columns(path, meta))
    check_transitions(tr, meta, source=str(path))  # float64 -> float32 can overflow to inf
    return tr, meta


def read_columns(path: str | os.PathLike, meta: DatasetMeta | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """The dataset's columns one at a time, (name, array) in the canonical dtypes: its files'
    layout (columns present, row counts, dtypes, widths) is checked, its values are not
    (`read_dataset` checks them). Each column is filled from every part file in turn, so memory
    holds the columns read so far plus one file's column, not the parts and their concatenation."""
    meta = meta or read_meta(path)
    files = dataset_files(path)
    rows = [_part_rows(file) for file in files]
    num_rows = sum(rows)
    if num_rows == 0:
        raise DatasetError(f"{path}: dataset is empty (0 transitions)")
    if num_rows != meta.num_transitions:
        raise DatasetError(f"{path}: {META_FILE} records {meta.num_transitions} transitions but "
                           f"the part files hold {num_rows}")
    for name in COLUMNS:
        kinds, dtype, ndim = _SPEC[name]
        column, start = None, 0
        for file, num in zip(files, rows):
            values = _read_column(file, name)
            if values.dtype.kind not in kinds:
                raise DatasetError(f"{path}: column {name} has dtype {values.dtype}, expected {np.dtype(dtype).name}")
            if values.ndim != ndim:
                raise DatasetError(f"{path}: column {name} has shape {values.shape}, expected {ndim}-D")
            if column is None:
                column = np.empty((num_rows, *values.shape[1:]), dtype)
            elif values.shape[1:] != column.shape[1:]:
                raise DatasetError(f"{path}: column {name} has different widths across part files "
                                   f"({sorted({column.shape[1], values.shape[1]})})")
            column[start:start + num] = values
            start += num
            del values
            pa.default_memory_pool().release_unused()  # Arrow's allocator would keep each file's memory
        yield name, column


def _part_rows(file: str) -> int:
    """The part file's row count, once its columns are known to be all there (from its footer)."""
    try:
        footer = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{file}: not a readable Parquet file ({err})") from None
    missing = [c for c in COLUMNS if c not in footer.schema_arrow.names]
    if missing:
        raise DatasetError(f"{file}: missing column(s) {', '.join(missing)}")
    return footer.metadata.num_rows


def _read_column(file: str, name: str) -> np.ndarray:
    try:
        table = pq.read_table(file, columns=[name])
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{file}: not a readable Parquet file ({err})") from None
    return (_column_2d if _SPEC[name][2] == 2 else _column_1d)(table[name], name, file)


def read_episode_returns(path: str | os.PathLike) -> np.ndarray:
    """`episode_returns` of a dataset directory, reading only its rewards and episode ids."""
    files = dataset_files(path)
    return episode_returns({name: np.concatenate([_read_column(f, name) for f in files])
                            for name in ("rewards", "eps_id")})


def episode_returns(tr: Transitions) -> np.ndarray:
    """Undiscounted return of each episode, in order of the episode's first row."""
    ids, first, inverse = np.unique(tr["eps_id"], return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=tr["rewards"].astype(np.float64), minlength=len(ids))
    return sums[np.argsort(first)]


def top_k_episodes(tr: Transitions, k: int) -> Transitions:
    """Rows of the k highest-return episodes (all if there are fewer), in file order."""
    if k < 1:
        raise ValueError("k must be >= 1")
    ids, first = np.unique(tr["eps_id"], return_index=True)
    ids = ids[np.argsort(first)]  # same order as episode_returns
    best = ids[np.argsort(-episode_returns(tr), kind="stable")[:k]]
    mask = np.isin(tr["eps_id"], best)
    return {name: tr[name][mask] for name in COLUMNS}
