"""Where a dataset is read from: a URI on any pyarrow filesystem (s3://, gs://, hdfs://, file://) or a local dir.

A dataset given as a URI is copied once into the run directory on the driver
(atomically: a temp directory renamed into place). From there nothing assumes
the driver's disk is visible to other nodes: Ray Data reads a local dataset by
its absolute path with its read tasks on the driver's node (`ray_data_read_args`,
the node label Ray Data itself used for the deprecated `local://` scheme), and the
alignment task receives the transitions through the object store.

Run outputs on storage (`--storage-path`) are `rllib_o2o.rundir.mirror`'s. Ray is imported
inside `ray_data_read_args` only, so importing this module never loads it.
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


NODE_ID_LABEL = "ray.io/node-id"  # the label Ray gives every node: its id


def ray_data_path(dataset_dir: str | Path) -> str:
    """The path Ray Data reads: URIs as they are, local directories as absolute paths (no `local://`:
    Ray Data deprecates it, "removed after January 2027")."""
    return str(dataset_dir) if is_uri(dataset_dir) else str(Path(dataset_dir).resolve())


def ray_data_read_args(dataset_dir: str | Path) -> dict:
    """`read_parquet` arguments that keep the read tasks of a local dataset on the driver's node.

    That is what `local://` did, with the label selector Ray Data used for it, so a dataset
    only the driver's disk holds still reads on a cluster. Ray Data places the tasks itself
    (so the dataset must be on storage every node mounts at the same path) for a URI, when
    Ray is not running yet (it then starts on this node alone) and when the driver's node
    has no CPU for them (e.g. a head node started with 0 CPUs).

    On the driver's node the read runs one task at a time (`concurrency=1`): a read worker keeps
    the object-store pages of the blocks it wrote mapped after the read, so each extra worker adds
    its share to the run's peak. At 10M Hopper-shaped rows one worker lowered the tiny pipeline's
    peak from 3.07x to 2.95x the dataset and the read workers' PSS from 1,230 to 699 MiB, with the
    first offline update 2 s later (docs/benchmarks.md, "Big datasets").

    Inside a Ray task (a stage task of `rllib-o2o bench`, whose placement group also holds Ray Data's
    tasks: `bench_tasks`) the read runs one task at a time without a node label: a label would
    schedule it outside the group, where it waits forever for a CPU once the stage tasks hold them all.
    """
    import ray

    if is_uri(dataset_dir) or not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    if context.get_task_id() is not None:
        return {"concurrency": 1}
    node_id = context.get_node_id()
    cpus = next((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["NodeID"] == node_id), 0)
    return {"label_selector": {NODE_ID_LABEL: node_id}, "concurrency": 1} if cpus >= 1 else {}
