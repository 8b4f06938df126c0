"""Datasets on any pyarrow filesystem (s3://, gs://, hdfs://, file://) and data paths workers can read.

A dataset given as a URI is copied once into the run directory on the driver
(atomically: a temp directory renamed into place). From there nothing assumes
the driver's disk is visible to other nodes: Ray Data reads local datasets with
the `local://` scheme (its read tasks run on the driver's node), and the
alignment task receives the transitions through the object store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rllib_o2o.data.schema import META_FILE, DatasetError


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def fetch_dataset(uri: str, target: Path) -> Path:
    """Copies the dataset directory at `uri` to `target` unless a complete copy is already there."""
    import pyarrow.fs as pafs

    if (target / META_FILE).exists():
        return target
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(f"{root.rstrip('/')}/{META_FILE}")
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for bad URIs
        raise DatasetError(f"{uri}: cannot open ({err})") from None
    if info.type != pafs.FileType.File:
        raise DatasetError(f"{uri}: no {META_FILE} (not a dataset directory)")
    tmp = target.with_name(f"{target.name}.tmp-fetch")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pafs.copy_files(root, str(tmp.resolve()), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"dataset: copied {uri} -> {target}", flush=True)
    return target


def ray_data_path(dataset_dir: str | Path) -> str:
    """The path Ray Data should read: URIs as they are, local directories pinned to this node."""
    if is_uri(dataset_dir):
        return str(dataset_dir)
    return f"local://{Path(dataset_dir).resolve()}"
