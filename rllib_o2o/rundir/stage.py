"""One stage's directory: resumable atomic checkpoints, the DONE.json marker, uploads through a mirror.

A stage directory keeps its two newest complete checkpoints, `checkpoint/` and
`checkpoint.prev/`. Each is built in a hidden temp directory (RLlib's
`save_to_path`, our progress.json, then a manifest of every file's size and
SHA-256), fsynced and renamed into place; the older one is rotated, never
rewritten. On restart the newest checkpoint that verifies and restores is used:
a damaged `checkpoint/` gets a warning naming it, is moved to
`checkpoint.corrupt/` and `checkpoint.prev/` is used instead. If no checkpoint
is usable the stage stops with a CheckpointError saying what to delete to start
it over (it never silently throws away training).

With a mirror (`rundir.mirror.Mirror`, the run's storage path) every committed
checkpoint and the finished stage are uploaded as soon as they exist locally.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Protocol

from rllib_o2o.checkpoints import (
    MODULE_DIR,
    CheckpointError,
    atomic_dir,
    fsync_dir,
    fsync_tree,
    verify_manifest,
    write_json_atomic,
    write_manifest,
)
from rllib_o2o.rundir.names import ALGO_DIR, CHECKPOINT_DIR, CORRUPT_DIR, DONE_FILE, PREVIOUS_DIR, PROGRESS_FILE


class StageUploads(Protocol):
    """What a stage asks of the run's storage (`rundir.mirror.Mirror` is one)."""

    def push_checkpoint(self, checkpoint: Path) -> None: ...

    def push_stage(self, stage_dir: Path) -> None: ...


def read_checkpoint(path: Path) -> dict:
    """The progress of the stage checkpoint at `path` after checking it is complete and undamaged.

    Raises CheckpointError naming the bad file otherwise; nothing is restored.
    """
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    verify_manifest(path)
    algo_dir = path / ALGO_DIR
    if not algo_dir.is_dir() or not any(algo_dir.iterdir()):
        raise CheckpointError(f"{algo_dir}: missing or empty (no RLlib algorithm state)")
    progress_path = path / PROGRESS_FILE
    try:
        progress = json.loads(progress_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{progress_path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(progress, dict) or not isinstance(progress.get("iteration"), int):
        raise CheckpointError(f"{progress_path}: no iteration count (not this project's progress file)")
    return progress


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class StageDir:
    """A stage's directory (`path`) and, when the run has storage, the `mirror` its results go to."""

    def __init__(self, path: str | Path, mirror: StageUploads | None = None):
        self.path = Path(path)
        self.mirror = mirror

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def module_path(self) -> Path:
        """The finished stage's module checkpoint (`checkpoints.save_module_checkpoint`)."""
        return self.path / MODULE_DIR

    def __repr__(self) -> str:
        return f"StageDir({str(self.path)!r})"

    def done(self) -> dict | None:
        """The stage's summary if it completed (its outputs are then durable), else None."""
        path = self.path / DONE_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def mark_done(self, summary: dict) -> dict:
        """Writes DONE.json (the stage's outputs must be in place), then uploads the stage if the run has storage."""
        write_json_atomic(self.path / DONE_FILE, summary)
        if self.mirror is not None:
            self.mirror.push_stage(self.path)
        return summary

    def checkpoints(self) -> list[Path]:
        """The committed checkpoints there are, newest first (none verified)."""
        return [p for p in (self.path / CHECKPOINT_DIR, self.path / PREVIOUS_DIR) if p.is_dir()]

    def save_checkpoint(self, algo, progress: dict) -> Path:
        """RLlib checkpoint + our progress + manifest, renamed into `checkpoint/`; the old one -> `checkpoint.prev/`.

        A kill at any point leaves the newest complete checkpoint in `checkpoint/` or
        (between the two renames) in `checkpoint.prev/`; half-written ones only in
        hidden `.checkpoint.tmp-*` directories, which the next restore removes. With a
        mirror the committed checkpoint is then uploaded (its manifest last).
        """
        latest, previous = self.path / CHECKPOINT_DIR, self.path / PREVIOUS_DIR
        tmp = atomic_dir(latest)
        try:
            algo.save_to_path(str((tmp / ALGO_DIR).resolve()))
            (tmp / PROGRESS_FILE).write_text(json.dumps(progress, default=float))
            write_manifest(tmp)
            fsync_tree(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        trash = None
        if latest.exists():
            if previous.exists():
                trash = self.path / f".{PREVIOUS_DIR}.trash-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(previous, trash)
            os.rename(latest, previous)
        os.rename(tmp, latest)
        fsync_dir(self.path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        if self.mirror is not None:
            self.mirror.push_checkpoint(latest)
        return latest

    def _remove_stale(self) -> None:
        """Half-written checkpoints and rotated-out ones of a process that was killed."""
        for stale in self.path.glob(f".{CHECKPOINT_DIR}*"):
            if stale.is_dir() and (".tmp-" in stale.name or ".trash-" in stale.name or ".old-" in stale.name):
                shutil.rmtree(stale, ignore_errors=True)

    def restore_checkpoint(self, algo) -> dict | None:
        """Restores the newest usable checkpoint into `algo`; returns its progress, or None if there is none.

        A damaged newest checkpoint is reported (warning on stderr naming it), moved to
        `checkpoint.corrupt/`, and the previous one is used. Raises CheckpointError
        when checkpoints exist but none can be restored.
        """
        if not self.path.is_dir():
            return None
        self._remove_stale()
        latest, previous = self.path / CHECKPOINT_DIR, self.path / PREVIOUS_DIR
        candidates = [path for path in (latest, previous) if path.exists()]
        if not candidates:
            return None
        problems = []
        for i, path in enumerate(candidates):
            try:
                progress = read_checkpoint(path)
                algo.restore_from_path(str((path / ALGO_DIR).resolve()))
            except Exception as err:  # noqa: BLE001 - any failure makes this checkpoint unusable
                problem = str(err) if isinstance(err, CheckpointError) else f"{type(err).__name__}: {err}"
                problem = problem.strip().splitlines()[0] if problem.strip() else type(err).__name__
                problems.append(f"{path}: {problem}" if not problem.startswith(str(path)) else problem)
                fallback = ("; falling back to the previous checkpoint " + str(candidates[i + 1])
                            if i + 1 < len(candidates) else "")
                _warn(f"{self.name} checkpoint {path} is unusable ({problem}){fallback}")
                continue
            if path == previous and latest in candidates:
                corrupt = self.path / CORRUPT_DIR
                shutil.rmtree(corrupt, ignore_errors=True)
                os.rename(latest, corrupt)  # else the next save would rotate it over the good one
                _warn(f"{self.name}: resuming from the previous checkpoint {path} (iteration "
                      f"{progress['iteration']}); the damaged one was moved to {corrupt}")
            return progress
        raise CheckpointError(f"{self.path}: no usable checkpoint ({'; '.join(problems)}). To restart the "
                              f"{self.name} stage from scratch, delete {self.path}/{CHECKPOINT_DIR}*")

    def latest_checkpoint_note(self) -> str:
        """Where a re-run would resume from, for error messages."""
        for path in (self.path / CHECKPOINT_DIR, self.path / PREVIOUS_DIR):
            if path.exists():
                try:
                    iteration = read_checkpoint(path)["iteration"]
                except CheckpointError:
                    continue
                return f"the last complete checkpoint is {path} (iteration {iteration})"
        return "no checkpoint was saved yet"
