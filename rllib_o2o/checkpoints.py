"""Stage checkpoints: a module state dict plus JSON metadata, written atomically.

Tensors are saved with `torch.save` and read back with `weights_only=True`, so
loading a checkpoint from an untrusted path never unpickles arbitrary objects.
The metadata records what produced the weights (stage, algorithm, spaces) and
is checked before any weight is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "module.pt"
META_FILE = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what is asked of it."""


def atomic_dir(target: Path):
    """A temp dir beside `target`; call `commit(tmp)` to rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def commit_dir(tmp: Path, target: Path) -> None:
    for root, _, files in os.walk(tmp):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=float)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_module_checkpoint(path: str | Path, weights: dict, meta: dict) -> Path:
    import torch

    path = Path(path)
    tmp = atomic_dir(path)
    try:
        torch.save({k: torch.tensor(np.array(v)) for k, v in weights.items()}, tmp / WEIGHTS_FILE)
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
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"{path}: checkpoint has {key}={meta.get(key)!r}, expected {value!r}")
    return {k: v.numpy() for k, v in tensors.items()}, meta
