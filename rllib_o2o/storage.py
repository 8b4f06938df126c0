"""Datasets and run outputs on any pyarrow filesystem (s3://, gs://, hdfs://, file://, a local dir).

A dataset given as a URI is copied once into the run directory on the driver
(atomically: a temp directory renamed into place). From there nothing assumes
the driver's disk is visible to other nodes: Ray Data reads a local dataset by
its absolute path with its read tasks on the driver's node (`ray_data_read_args`,
the node label Ray Data itself used for the deprecated `local://` scheme), and the
alignment task receives the transitions through the object store.

With `--storage-path STORAGE` the run directory stays the working copy and is
mirrored to STORAGE/<run dir name>, so a job whose driver lands on a fresh node
resumes from there. What a reader of the storage takes as complete is decided
by markers that are uploaded last: a stage's `DONE.json`, a checkpoint's
`manifest.json` (SHA-256 of every file, verified again after download). The
storage keeps a stage's two newest checkpoints in two slots (`checkpoint-a/`,
`checkpoint-b/`); an upload overwrites the older one, so a crash mid-upload
leaves the other complete. Datasets are not uploaded: `--dataset` is fetched,
imported or generated again on a new node.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from pathlib import Path

from rllib_o2o.checkpoints import MANIFEST_FILE, CheckpointError, atomic_dir, commit_dir
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
    first offline update 2 s later (docs/benchmarks.md, "Big datasets, read once").
    """
    import ray

    if is_uri(dataset_dir) or not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    cpus = next((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["NodeID"] == node_id), 0)
    return {"label_selector": {NODE_ID_LABEL: node_id}, "concurrency": 1} if cpus >= 1 else {}


# -- run outputs on storage (--storage-path) ----------------------------------------

SLOTS = ("checkpoint-a", "checkpoint-b")
# Local run dir (resolved) -> where it is mirrored. Set by the pipeline's prepare(); the stage code
# (save_checkpoint, mark_done) uploads through it without carrying the config around.
_MIRRORS: dict[Path, tuple] = {}  # -> (URI, pyarrow filesystem, path on it)


class StorageError(ValueError):
    """The storage path cannot be opened, read or written; the message names the URI."""


def _open(uri: str):
    """(filesystem, path) of a URI or local path (made absolute: pyarrow wants absolute paths)."""
    import pyarrow.fs as pafs

    if not is_uri(uri):
        uri = str(Path(uri).resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for bad URIs
        raise StorageError(f"--storage-path {uri}: cannot open ({err})") from None
    return fs, path.rstrip("/")


def run_uri(storage_path: str, run_dir: str | Path) -> str:
    """Where a run lives on storage: STORAGE_PATH/<run dir name>."""
    base = storage_path if is_uri(storage_path) else str(Path(storage_path).resolve())
    return f"{base.rstrip('/')}/{Path(run_dir).resolve().name}"


def check_storage(storage_path: str, out: str | Path) -> None:
    """Raises StorageError unless `storage_path` opens and takes a file (created and removed)."""
    import pyarrow.fs as pafs

    fs, root = _open(storage_path)
    if isinstance(fs, pafs.LocalFileSystem) and Path(root) == Path(out).resolve().parent:
        raise StorageError(f"--storage-path {storage_path}: is the parent of --out {out}, so the run would be "
                           "stored onto itself; use another directory")
    probe = f"{root}/.rllib-o2o-write-test-{secrets.token_hex(4)}"
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(probe) as stream:
            stream.write(b"ok")
        fs.delete_file(probe)
    except OSError as err:
        raise StorageError(f"--storage-path {storage_path}: not writable ({err})") from None


def attach(run_dir: Path, storage_path: str | None) -> str | None:
    """Mirrors `run_dir` to storage from now on (None: stops mirroring it); returns the run's URI."""
    key = Path(run_dir).resolve()
    if storage_path is None:
        _MIRRORS.pop(key, None)
        return None
    uri = run_uri(storage_path, run_dir)
    _MIRRORS[key] = (uri, *_open(uri))
    return uri


def _mirror(path: Path) -> tuple[object, str, str] | None:
    """(filesystem, remote path, remote URI) of a local path inside an attached run dir, else None."""
    path = Path(path).resolve()
    for run_dir, (uri, fs, root) in _MIRRORS.items():
        if path == run_dir or run_dir in path.parents:
            rel = path.relative_to(run_dir).as_posix()
            suffix = "" if rel == "." else f"/{rel}"
            return fs, root + suffix, uri + suffix
    return None


def _report(verb: str, what: str, arrow: str, uri: str, files: int, size: int, start: float, note: str = "") -> None:
    print(f"storage: {verb} {what} {arrow} {uri} ({files} file{'s' if files != 1 else ''}, {size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.2f} s{note})", flush=True)


def _put(fs, local: Path, remote: str) -> int:
    fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(remote) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return local.stat().st_size


def _put_marker(fs, local: Path, remote: str) -> int:
    """A marker (or any small file readers must see whole): temp name, then a move where supported."""
    tmp = f"{remote}.tmp-{secrets.token_hex(4)}"
    size = _put(fs, local, tmp)
    try:
        fs.move(tmp, remote)
    except NotImplementedError:  # object stores without move publish an object only once it is whole
        fs.delete_file(tmp)
        _put(fs, local, remote)
    return size


def _get(fs, remote: str, local: Path) -> int:
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(remote) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return local.stat().st_size


def _get_marker(fs, remote: str, local: Path) -> int:
    tmp = local.with_name(f".{local.name}.tmp-{secrets.token_hex(4)}")
    size = _get(fs, remote, tmp)
    tmp.replace(local)
    return size


def _is_file(fs, remote: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(remote).type == pafs.FileType.File


def _list(fs, remote: str) -> list[str]:
    """Paths of the files under `remote`, relative to it ([] if it does not exist)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(remote, recursive=True, allow_not_found=True))
    return sorted(i.path[len(remote) + 1:] for i in infos if i.type == pafs.FileType.File)


def _children(fs, remote: str) -> dict[str, bool]:
    """Name -> is a directory, of the entries directly under `remote` ({} if it does not exist)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(remote, recursive=False, allow_not_found=True))
    return {i.base_name: i.type == pafs.FileType.Directory for i in infos}


def _read_json(fs, remote: str):
    with fs.open_input_stream(remote) as src:
        return json.loads(src.read())


def _transfer_error(err: OSError, uri: str) -> StorageError:
    return StorageError(f"storage {uri}: {err}. The local run directory is complete up to here; "
                        "re-run the same command to resume and sync again")


def push_file(path: Path) -> None:
    """Uploads one file of an attached run (config.json, results*.json): whole or not at all."""
    mirror = _mirror(path)
    if mirror is None:
        return
    fs, remote, uri = mirror
    start = time.perf_counter()
    try:
        size = _put_marker(fs, Path(path), remote)
    except OSError as err:
        raise _transfer_error(err, uri) from None
    _report("uploaded", Path(path).name, "->", uri, 1, size, start)


def _remote_slots(fs, remote_stage: str) -> list[tuple[int, str]]:
    """(iteration, slot path) of the slots holding a complete upload (manifest present), newest first."""
    from rllib_o2o.stages.common import PROGRESS_FILE

    found = []
    for slot in SLOTS:
        path = f"{remote_stage}/{slot}"
        try:
            if _is_file(fs, f"{path}/{MANIFEST_FILE}"):
                found.append((int(_read_json(fs, f"{path}/{PROGRESS_FILE}")["iteration"]), path))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable progress: not a usable slot
    return sorted(found, reverse=True)


def push_checkpoint(checkpoint: Path) -> None:
    """Uploads a stage's newest checkpoint into the slot holding the older (or no) upload.

    The slot's manifest is deleted first and written last, so until the upload is
    whole the slot is incomplete to every reader; files whose size and SHA-256 match
    the slot's previous manifest are not sent again.
    """
    mirror = _mirror(checkpoint.parent)
    if mirror is None:
        return
    fs, remote_stage, uri = mirror
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
    start = time.perf_counter()
    try:
        slots = _remote_slots(fs, remote_stage)
        held = {path for _, path in slots}
        free = [f"{remote_stage}/{slot}" for slot in SLOTS if f"{remote_stage}/{slot}" not in held]
        slot = free[0] if free else slots[-1][1]
        previous = _read_json(fs, f"{slot}/{MANIFEST_FILE}")["files"] if slot in held else {}
        if slot in held:
            fs.delete_file(f"{slot}/{MANIFEST_FILE}")
        sent = [name for name, entry in manifest.items() if previous.get(name) != entry]
        size = sum(_put(fs, checkpoint / name, f"{slot}/{name}") for name in sent)
        for stale in set(_list(fs, slot)) - set(manifest):
            fs.delete_file(f"{slot}/{stale}")
        size += _put_marker(fs, checkpoint / MANIFEST_FILE, f"{slot}/{MANIFEST_FILE}")
    except OSError as err:
        raise _transfer_error(err, uri) from None
    note = f", {len(manifest) - len(sent)} unchanged" if len(sent) < len(manifest) else ""
    _report("uploaded", f"{checkpoint.parent.name}/{checkpoint.name}", "->", f"{uri}/{slot.rsplit('/', 1)[1]}",
            len(sent) + 1, size, start, note)


def _stage_outputs(stage_dir: Path) -> list[str]:
    """A finished stage's files other than checkpoints and DONE.json (e.g. module/), relative to it."""
    from rllib_o2o.stages.common import DONE_FILE

    return sorted(p.relative_to(stage_dir).as_posix() for p in stage_dir.rglob("*")
                  if p.is_file() and _is_output(p.relative_to(stage_dir).as_posix(), DONE_FILE))


def _is_output(rel: str, done_file: str) -> bool:
    top = rel.split("/")[0]
    return rel != done_file and not top.startswith((".", "checkpoint")) and ".tmp-" not in rel


def push_stage(stage_dir: Path) -> None:
    """Uploads a finished stage: its outputs (module/), then DONE.json, the marker readers trust."""
    from rllib_o2o.stages.common import DONE_FILE

    mirror = _mirror(stage_dir)
    if mirror is None:
        return
    fs, remote, uri = mirror
    start = time.perf_counter()
    names = _stage_outputs(stage_dir)
    try:
        size = sum(_put(fs, stage_dir / name, f"{remote}/{name}") for name in names)
        size += _put_marker(fs, stage_dir / DONE_FILE, f"{remote}/{DONE_FILE}")
    except OSError as err:
        raise _transfer_error(err, uri) from None
    _report("uploaded", f"{stage_dir.name} (outputs, {DONE_FILE})", "->", uri, len(names) + 1, size, start)


def _pull_stage(fs, remote: str, uri: str, stage_dir: Path) -> None:
    """A stage finished on storage but not here: its outputs, then DONE.json (last, so a kill re-pulls)."""
    from rllib_o2o.stages.common import DONE_FILE

    start = time.perf_counter()
    names = [name for name in _list(fs, remote) if _is_output(name, DONE_FILE)]
    size = sum(_get(fs, f"{remote}/{name}", stage_dir / name) for name in names)
    size += _get_marker(fs, f"{remote}/{DONE_FILE}", stage_dir / DONE_FILE)
    _report("downloaded", f"{stage_dir.name} (outputs, {DONE_FILE})", "<-", uri, len(names) + 1, size, start)


def _local_iteration(stage_dir: Path) -> int:
    """The newest iteration among the local checkpoints with a manifest (-1: none)."""
    from rllib_o2o.stages.common import CHECKPOINT_DIR, PREVIOUS_DIR, PROGRESS_FILE

    best = -1
    for name in (CHECKPOINT_DIR, PREVIOUS_DIR):
        path = stage_dir / name
        try:
            if (path / MANIFEST_FILE).is_file():
                best = max(best, int(json.loads((path / PROGRESS_FILE).read_text())["iteration"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return best


def _pull_checkpoints(fs, slots: list[tuple[int, str]], uri: str, stage_dir: Path) -> None:
    """The storage's checkpoints (newest first) become checkpoint/ and checkpoint.prev/.

    Each is downloaded into a hidden temp dir (removed by the next restore if this
    process dies) and verified against its manifest before it is renamed into place;
    one that does not verify is skipped with a warning.
    """
    from rllib_o2o.stages.common import CHECKPOINT_DIR, PREVIOUS_DIR, read_checkpoint

    verified = []
    for _, slot in slots:
        start = time.perf_counter()
        tmp = atomic_dir(stage_dir / CHECKPOINT_DIR)
        try:
            names = list(_read_json(fs, f"{slot}/{MANIFEST_FILE}")["files"])
            size = sum(_get(fs, f"{slot}/{name}", tmp / name) for name in names)
            size += _get(fs, f"{slot}/{MANIFEST_FILE}", tmp / MANIFEST_FILE)
            read_checkpoint(tmp)  # manifest, algo/ and progress.json, as a restore checks them
        except (OSError, ValueError, KeyError, TypeError, CheckpointError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"WARNING: storage: skipped the checkpoint {uri}/{slot.rsplit('/', 1)[1]} "
                  f"({type(err).__name__}: {err})", file=sys.stderr, flush=True)
            continue
        verified.append(tmp)
        _report("downloaded", f"{stage_dir.name}/checkpoint", "<-", f"{uri}/{slot.rsplit('/', 1)[1]}",
                len(names) + 1, size, start)
    for tmp, name in zip(verified, (CHECKPOINT_DIR, PREVIOUS_DIR)):
        commit_dir(tmp, stage_dir / name)


def _sync_stage(fs, remote: str, uri: str, stage_dir: Path) -> None:
    """Brings the newer side of one stage to the other: a finished stage, else the newer checkpoint."""
    from rllib_o2o.stages.common import CHECKPOINT_DIR, DONE_FILE

    local_done, remote_done = (stage_dir / DONE_FILE).exists(), _is_file(fs, f"{remote}/{DONE_FILE}")
    if local_done:
        if not remote_done:
            push_stage(stage_dir)
        return
    if remote_done:
        _pull_stage(fs, remote, uri, stage_dir)
        return
    slots, local = _remote_slots(fs, remote), _local_iteration(stage_dir)
    if slots and slots[0][0] > local:
        _pull_checkpoints(fs, slots, uri, stage_dir)
    elif local >= 0 and (not slots or local > slots[0][0]):
        push_checkpoint(stage_dir / CHECKPOINT_DIR)


def _is_stage(names: set[str]) -> bool:
    from rllib_o2o.stages.common import CHECKPOINT_DIR, DONE_FILE

    return bool(names & {DONE_FILE, CHECKPOINT_DIR, *SLOTS})


def read_remote_json(run_dir: Path, name: str):
    """A JSON file of an attached run as stored (None if it is not there), e.g. to compare configs."""
    mirror = _mirror(Path(run_dir) / name)
    if mirror is None:
        return None
    fs, remote, uri = mirror
    try:
        return _read_json(fs, remote) if _is_file(fs, remote) else None
    except (OSError, ValueError) as err:
        raise StorageError(f"storage {uri}: unreadable ({err})") from None


def sync_run(run_dir: Path) -> None:
    """At the start of a run: downloads what storage has and the run dir lacks (or has older), uploads
    the reverse (e.g. after a crash between a local write and its upload). Datasets stay local."""
    mirror = _mirror(run_dir)
    if mirror is None:
        return
    fs, root, uri = mirror
    run_dir = Path(run_dir)
    try:
        remote = _children(fs, root)
        local_dirs = {p.name for p in run_dir.iterdir() if p.is_dir()}
        for name in sorted(local_dirs | {n for n, is_dir in remote.items() if is_dir}):
            if name == "datasets" or name.startswith("."):
                continue
            names = set(_children(fs, f"{root}/{name}")) if remote.get(name) else set()
            if (run_dir / name).is_dir():
                names |= {p.name for p in (run_dir / name).iterdir()}
            if _is_stage(names):
                _sync_stage(fs, f"{root}/{name}", f"{uri}/{name}", run_dir / name)
        for name in sorted(remote):
            if not remote[name] and name.endswith(".json") and ".tmp-" not in name and not (run_dir / name).exists():
                start = time.perf_counter()
                size = _get_marker(fs, f"{root}/{name}", run_dir / name)
                _report("downloaded", name, "<-", f"{uri}/{name}", 1, size, start)
        for path in sorted(run_dir.glob("*.json")):
            if path.name not in remote:
                push_file(path)
    except OSError as err:
        raise _transfer_error(err, uri) from None
