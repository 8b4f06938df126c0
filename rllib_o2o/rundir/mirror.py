"""A run directory's copy on storage (`--storage-path`): any pyarrow filesystem (s3://, gs://, hdfs://, file://, a dir).

With `--storage-path STORAGE` the run directory stays the working copy and is
mirrored to STORAGE/<run dir name>, so a job whose driver lands on a fresh node
resumes from there. A `Mirror` is made for one run directory and handed to what
uploads (`layout.RunDir`, `stage.StageDir`); without storage they hold None.
What a reader of the storage takes as complete is decided by markers that are
uploaded last: a stage's `DONE.json`, a checkpoint's `manifest.json` (SHA-256 of
every file, verified again after download). The storage keeps a stage's two
newest checkpoints in two slots (`checkpoint-a/`, `checkpoint-b/`); an upload
overwrites the older one, so a crash mid-upload leaves the other complete.
Datasets are not uploaded: `--dataset` is fetched, imported or generated again on
a new node.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from rllib_o2o.checkpoints import MANIFEST_FILE, CheckpointError, atomic_dir, commit_dir
from rllib_o2o.data.location import is_uri
from rllib_o2o.rundir.names import CHECKPOINT_DIR, DATASETS_DIR, DONE_FILE, PREVIOUS_DIR, PROGRESS_FILE
from rllib_o2o.rundir.stage import read_checkpoint

SLOTS = ("checkpoint-a", "checkpoint-b")


class StorageError(ValueError):
    """The storage path cannot be opened, read or written; the message names the URI."""


def _open(uri: str):
    """(filesystem, path) of a URI or local path (made absolute: pyarrow wants absolute paths)."""
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


def _report(verb: str, what: str, arrow: str, uri: str, files: int, size: int, start: float, note: str = "") -> None:
    print(f"storage: {verb} {what} {arrow} {uri} ({files} file{'s' if files != 1 else ''}, {size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.2f} s{note})", flush=True)


def _put(fs, local: Path, remote: str) -> int:
    fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(remote) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return local.stat().st_size


def _publish(fs, remote: str, write) -> None:
    """Writes a marker (or any small file readers must see whole) by `write(fs, path)`: to a temp name,
    then a move where supported."""
    tmp = f"{remote}.tmp-{secrets.token_hex(4)}"
    write(fs, tmp)
    try:
        fs.move(tmp, remote)
    except NotImplementedError:  # object stores without move publish an object only once it is whole
        fs.delete_file(tmp)
        write(fs, remote)


def _put_marker(fs, local: Path, remote: str) -> int:
    _publish(fs, remote, lambda fs, path: _put(fs, local, path))
    return local.stat().st_size


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
    return fs.get_file_info(remote).type == pafs.FileType.File


def _list(fs, remote: str) -> list[str]:
    """Paths of the files under `remote`, relative to it ([] if it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(remote, recursive=True, allow_not_found=True))
    return sorted(i.path[len(remote) + 1:] for i in infos if i.type == pafs.FileType.File)


def _children(fs, remote: str) -> dict[str, bool]:
    """Name -> is a directory, of the entries directly under `remote` ({} if it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(remote, recursive=False, allow_not_found=True))
    return {i.base_name: i.type == pafs.FileType.Directory for i in infos}


def _read_json(fs, remote: str):
    with fs.open_input_stream(remote) as src:
        return json.loads(src.read())


def _stage_outputs(stage_dir: Path) -> list[str]:
    """A finished stage's files other than checkpoints and DONE.json (e.g. module/), relative to it."""
    return sorted(p.relative_to(stage_dir).as_posix() for p in stage_dir.rglob("*")
                  if p.is_file() and _is_output(p.relative_to(stage_dir).as_posix()))


def _is_output(rel: str) -> bool:
    top = rel.split("/")[0]
    return rel != DONE_FILE and not top.startswith((".", "checkpoint")) and ".tmp-" not in rel


def _local_iteration(stage_dir: Path) -> int:
    """The newest iteration among the local checkpoints with a manifest (-1: none)."""
    best = -1
    for name in (CHECKPOINT_DIR, PREVIOUS_DIR):
        path = stage_dir / name
        try:
            if (path / MANIFEST_FILE).is_file():
                best = max(best, int(json.loads((path / PROGRESS_FILE).read_text())["iteration"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return best


def _is_stage(names: set[str]) -> bool:
    return bool(names & {DONE_FILE, CHECKPOINT_DIR, *SLOTS})


class Mirror:
    """The copy of the run directory `run_dir` at STORAGE_PATH/<its name> (`uri`)."""

    def __init__(self, storage_path: str, run_dir: str | Path):
        self.run_dir = Path(run_dir).resolve()
        self.uri = run_uri(storage_path, run_dir)
        self._fs, self._root = _open(self.uri)

    def __repr__(self) -> str:
        return f"Mirror({self.uri!r})"

    def _remote(self, path: Path) -> tuple[str, str]:
        """(path on the filesystem, URI) of a local path inside the run directory."""
        rel = Path(path).resolve().relative_to(self.run_dir).as_posix()
        suffix = "" if rel == "." else f"/{rel}"
        return self._root + suffix, self.uri + suffix

    def _transfer_error(self, err: OSError) -> StorageError:
        return StorageError(f"storage {self.uri}: {err}. The local run directory is complete up to here; "
                            "re-run the same command to resume and sync again")

    # -- files of the run --------------------------------------------------------------

    def push_file(self, path: Path) -> None:
        """Uploads one file of the run (config.json, results*.json): whole or not at all."""
        remote, uri = self._remote(path)
        start = time.perf_counter()
        try:
            size = _put_marker(self._fs, Path(path), remote)
        except OSError as err:
            raise self._transfer_error(err) from None
        _report("uploaded", Path(path).name, "->", uri, 1, size, start)

    def read_json(self, name: str):
        """A JSON file of the run as stored (None if it is not there), e.g. to compare configs."""
        remote, uri = self._remote(self.run_dir / name)
        try:
            return _read_json(self._fs, remote) if _is_file(self._fs, remote) else None
        except (OSError, ValueError) as err:
            raise StorageError(f"storage {uri}: unreadable ({err})") from None

    def write_json(self, name: str, obj) -> None:
        """A small JSON file of the run's own on storage (not in the local run directory), whole or not at all."""
        data = json.dumps(obj, sort_keys=True).encode()

        def write(fs, path: str) -> None:
            with fs.open_output_stream(path) as stream:
                stream.write(data)

        remote, _ = self._remote(self.run_dir / name)
        try:
            self._fs.create_dir(self._root, recursive=True)
            _publish(self._fs, remote, write)
        except OSError as err:
            raise self._transfer_error(err) from None

    def delete(self, name: str) -> None:
        """Removes a file of the run from storage (nothing if it is not there)."""
        remote, _ = self._remote(self.run_dir / name)
        try:
            if _is_file(self._fs, remote):
                self._fs.delete_file(remote)
        except OSError as err:
            raise self._transfer_error(err) from None

    # -- stages --------------------------------------------------------------------------

    def _remote_slots(self, remote_stage: str) -> list[tuple[int, str]]:
        """(iteration, slot path) of the slots holding a complete upload (manifest present), newest first."""
        found = []
        for slot in SLOTS:
            path = f"{remote_stage}/{slot}"
            try:
                if _is_file(self._fs, f"{path}/{MANIFEST_FILE}"):
                    found.append((int(_read_json(self._fs, f"{path}/{PROGRESS_FILE}")["iteration"]), path))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable progress: not a usable slot
        return sorted(found, reverse=True)

    def push_checkpoint(self, checkpoint: Path) -> None:
        """Uploads a stage's newest checkpoint into the slot holding the older (or no) upload.

        The slot's manifest is deleted first and written last, so until the upload is
        whole the slot is incomplete to every reader; files whose size and SHA-256 match
        the slot's previous manifest are not sent again.
        """
        fs = self._fs
        remote_stage, uri = self._remote(checkpoint.parent)
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
        start = time.perf_counter()
        try:
            slots = self._remote_slots(remote_stage)
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
            raise self._transfer_error(err) from None
        note = f", {len(manifest) - len(sent)} unchanged" if len(sent) < len(manifest) else ""
        _report("uploaded", f"{checkpoint.parent.name}/{checkpoint.name}", "->", f"{uri}/{slot.rsplit('/', 1)[1]}",
                len(sent) + 1, size, start, note)

    def push_stage(self, stage_dir: Path) -> None:
        """Uploads a finished stage: its outputs (module/), then DONE.json, the marker readers trust."""
        remote, uri = self._remote(stage_dir)
        start = time.perf_counter()
        names = _stage_outputs(stage_dir)
        try:
            size = sum(_put(self._fs, stage_dir / name, f"{remote}/{name}") for name in names)
            size += _put_marker(self._fs, stage_dir / DONE_FILE, f"{remote}/{DONE_FILE}")
        except OSError as err:
            raise self._transfer_error(err) from None
        _report("uploaded", f"{stage_dir.name} (outputs, {DONE_FILE})", "->", uri, len(names) + 1, size, start)

    def _pull_stage(self, remote: str, uri: str, stage_dir: Path) -> None:
        """A stage finished on storage but not here: its outputs, then DONE.json (last, so a kill re-pulls)."""
        start = time.perf_counter()
        names = [name for name in _list(self._fs, remote) if _is_output(name)]
        size = sum(_get(self._fs, f"{remote}/{name}", stage_dir / name) for name in names)
        size += _get_marker(self._fs, f"{remote}/{DONE_FILE}", stage_dir / DONE_FILE)
        _report("downloaded", f"{stage_dir.name} (outputs, {DONE_FILE})", "<-", uri, len(names) + 1, size, start)

    def _pull_checkpoints(self, slots: list[tuple[int, str]], uri: str, stage_dir: Path) -> None:
        """The storage's checkpoints (newest first) become checkpoint/ and checkpoint.prev/.

        Each is downloaded into a hidden temp dir (removed by the next restore if this
        process dies) and verified against its manifest before it is renamed into place;
        one that does not verify is skipped with a warning.
        """
        verified = []
        for _, slot in slots:
            start = time.perf_counter()
            tmp = atomic_dir(stage_dir / CHECKPOINT_DIR)
            try:
                names = list(_read_json(self._fs, f"{slot}/{MANIFEST_FILE}")["files"])
                size = sum(_get(self._fs, f"{slot}/{name}", tmp / name) for name in names)
                size += _get(self._fs, f"{slot}/{MANIFEST_FILE}", tmp / MANIFEST_FILE)
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

    def _sync_stage(self, remote: str, uri: str, stage_dir: Path) -> None:
        """Brings the newer side of one stage to the other: a finished stage, else the newer checkpoint."""
        local_done, remote_done = (stage_dir / DONE_FILE).exists(), _is_file(self._fs, f"{remote}/{DONE_FILE}")
        if local_done:
            if not remote_done:
                self.push_stage(stage_dir)
            return
        if remote_done:
            self._pull_stage(remote, uri, stage_dir)
            return
        slots, local = self._remote_slots(remote), _local_iteration(stage_dir)
        if slots and slots[0][0] > local:
            self._pull_checkpoints(slots, uri, stage_dir)
        elif local >= 0 and (not slots or local > slots[0][0]):
            self.push_checkpoint(stage_dir / CHECKPOINT_DIR)

    def sync(self) -> None:
        """At the start of a run: downloads what storage has and the run dir lacks (or has older), uploads
        the reverse (e.g. after a crash between a local write and its upload). Datasets stay local."""
        fs, root, uri, run_dir = self._fs, self._root, self.uri, self.run_dir
        try:
            remote = _children(fs, root)
            local_dirs = {p.name for p in run_dir.iterdir() if p.is_dir()}
            for name in sorted(local_dirs | {n for n, is_dir in remote.items() if is_dir}):
                if name == DATASETS_DIR or name.startswith("."):
                    continue
                names = set(_children(fs, f"{root}/{name}")) if remote.get(name) else set()
                if (run_dir / name).is_dir():
                    names |= {p.name for p in (run_dir / name).iterdir()}
                if _is_stage(names):
                    self._sync_stage(f"{root}/{name}", f"{uri}/{name}", run_dir / name)
            for name in sorted(remote):
                if not remote[name] and name.endswith(".json") and ".tmp-" not in name and not (run_dir / name).exists():
                    start = time.perf_counter()
                    size = _get_marker(fs, f"{root}/{name}", run_dir / name)
                    _report("downloaded", name, "<-", f"{uri}/{name}", 1, size, start)
            for path in sorted(run_dir.glob("*.json")):
                if path.name not in remote:
                    self.push_file(path)
        except OSError as err:
            raise self._transfer_error(err) from None
