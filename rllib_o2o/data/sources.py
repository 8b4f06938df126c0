"""What a `--dataset` string names: a dataset directory, a D4RL file or a Minari dataset.

One decision, made from what is on disk, for the preflight and the pipeline alike. A path
that exists is what it holds. One that does not is a Minari dataset only when
MINARI_DATASETS_PATH has it or it has the shape of a Minari id (`name-vN`, e.g.
mujoco/hopper/medium-v0: the importer then says where it looked); anything else is a
missing file or directory and reported as such, not as a missing Minari dataset.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rllib_o2o.data.schema import META_FILE, DatasetError, read_meta

DIRECTORY, D4RL, MINARI = "directory", "d4rl", "minari"
D4RL_SUFFIXES = (".hdf5", ".h5")
_MINARI_ID = re.compile(r"[\w.-]+(/[\w.-]+)*-v\d+")


def minari_root() -> Path:
    """Where Minari keeps datasets by id (its own default unless MINARI_DATASETS_PATH is set)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def dataset_kind(source: str | os.PathLike) -> str:
    """DIRECTORY, D4RL or MINARI; a DatasetError naming `source` when it is none of them."""
    path = Path(source)
    if path.is_dir():
        if (path / META_FILE).is_file():
            return DIRECTORY
        if (path / "data").exists():
            return MINARI
        read_meta(path)  # raises: no dataset.json
    if path.is_file():
        if path.suffix in D4RL_SUFFIXES:
            return D4RL
        raise DatasetError(f"{path}: not a dataset directory, a D4RL .hdf5/.h5 file or a Minari dataset")
    if (minari_root() / path).is_dir() or (not path.is_absolute() and _MINARI_ID.fullmatch(str(source))):
        return MINARI
    raise DatasetError(f"{source}: no such file or directory")
