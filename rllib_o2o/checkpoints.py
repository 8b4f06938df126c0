"""Stage checkpoints: a module state dict plus JSON metadata, written atomically.

Tensors are saved with `torch.save` and read back with `weights_only=True`, so
loading a checkpoint from an untrusted path never unpickles arbitrary objects.
The metadata records what produced the weights (stage, algorithm, spaces) and
is checked before any weight is loaded.

Stage checkpoints (RLlib algorithm state, see `rllib_o2o.stages.common`) carry a
manifest of every file's size and SHA-256, written last, so a truncated or
damaged checkpoint is recognised before RLlib tries to load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "module.pt"
META_FILE = "meta.json"
MODULE_DIR = "module"  # a stage's finished module checkpoint, inside its stage dir
OPTIMIZERS_FILE = "optimizers.pt"  # optional: Adam states of the stage's learner
MANIFEST_FILE = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what is asked of it."""


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def with_umask_mode(path: Path) -> Path:
    """Gives a temp file or dir the mode a plain create would have had (tempfile makes them 0600/0700),
    so outputs on a shared filesystem are as readable as the user's umask allows."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())
    return path


def atomic_dir(target: Path):
    """A temp dir beside `target`; call `commit(tmp)` to rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return with_umask_mode(Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent)))


def fsync_tree(root: Path) -> None:
    """fsyncs every file under `root` (and the directories), so a rename after it publishes durable data."""
    for parent, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(parent, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(parent))


def fsync_dir(path: Path) -> None:
    """Makes a rename or create inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_dir(tmp: Path, target: Path) -> None:
    fsync_tree(tmp)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
    fsync_dir(target.parent)


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=float)
        fh.flush()
        os.fsync(fh.fileno())
    with_umask_mode(Path(tmp))
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_module_checkpoint(path: str | Path, weights: dict, meta: dict, optimizer_states: dict | None = None) -> Path:
    """Module weights + meta (+ optimizer state dicts, tensors only) as one atomic directory."""
    import torch

    path = Path(path)
    tmp = atomic_dir(path)
    try:
        torch.save({k: torch.tensor(np.array(v)) for k, v in weights.items()}, tmp / WEIGHTS_FILE)
        if optimizer_states is not None:
            torch.save(optimizer_states, tmp / OPTIMIZERS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=float))
        commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_module_checkpoint(path: str | Path, expect: dict | None = None) -> tuple[dict, dict]:
    """Returns (weights as numpy, meta); `expect` entries must equal the metadata's."""
    import torch

    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path}: not a module checkpoint (needs {WEIGHTS_FILE} and {META_FILE})")
    try:
        meta = json.loads((path / META_FILE).read_text())
        tensors = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a corrupt checkpoint
        detail = (str(err).strip().splitlines() or [""])[0].strip()  # torch's messages run to many lines
        if isinstance(err, pickle.UnpicklingError):
            detail += " It holds Python objects other than tensors, which are never unpickled here."
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {detail})") from None
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"{path}: checkpoint has {key}={meta.get(key)!r}, expected {value!r}")
    return {k: v.numpy() for k, v in tensors.items()}, meta


def load_optimizer_states(path: str | Path) -> dict | None:
    """The optimizer states saved with a module checkpoint, or None if it has none."""
    import torch

    file = Path(path) / OPTIMIZERS_FILE
    if not file.is_file():
        return None
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a corrupt checkpoint
        detail = (str(err).strip().splitlines() or [""])[0].strip()
        raise CheckpointError(f"{file}: unreadable optimizer state ({type(err).__name__}: {detail})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(root: str | Path) -> Path:
    """Records the size and SHA-256 of every file under `root` in `root/manifest.json` (write it last)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (root / MANIFEST_FILE).write_text(json.dumps({"files": manifest}, indent=1, sort_keys=True))
    return root / MANIFEST_FILE


def verify_manifest(root: str | Path) -> bool:
    """Raises CheckpointError naming the first missing, truncated or altered file under `root`.

    Returns False (nothing checked) for a directory without a manifest, e.g. one
    written before manifests existed.
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.exists():
        return False
    try:
        files = json.loads(path.read_text())["files"]
        entries = [(name, int(e["size"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: unreadable manifest ({type(err).__name__}: {err})") from None
    for name, size, digest in entries:
        file = root / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (listed in {MANIFEST_FILE})")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(f"{file}: {actual} bytes, {MANIFEST_FILE} records {size} (truncated or damaged)")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: content differs from its {MANIFEST_FILE} checksum (damaged)")
    return True
