"""What stages 1 and 3 share: resumable training loops with atomic checkpoints.

A stage directory keeps its two newest complete checkpoints, `checkpoint/` and
`checkpoint.prev/`. Each is built in a hidden temp directory (RLlib's
`save_to_path`, our progress.json, then a manifest of every file's size and
SHA-256), fsynced and renamed into place; the older one is rotated, never
rewritten. On restart the newest checkpoint that verifies and restores is used:
a damaged `checkpoint/` gets a warning naming it, is moved to
`checkpoint.corrupt/` and `checkpoint.prev/` is used instead. If no checkpoint
is usable the stage stops with a CheckpointError saying what to delete to start
it over (it never silently throws away training).

With a storage path (`rllib_o2o.storage`) every committed checkpoint and every
finished stage is uploaded as soon as it exists locally.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable

from rllib_o2o.checkpoints import (
    CheckpointError,
    atomic_dir,
    fsync_dir,
    fsync_tree,
    verify_manifest,
    write_json_atomic,
    write_manifest,
)
from rllib_o2o.console import StageProgress
from rllib_o2o.storage import push_checkpoint, push_stage

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.prev"
CORRUPT_DIR = "checkpoint.corrupt"
DONE_FILE = "DONE.json"
PROGRESS_FILE = "progress.json"
ALGO_DIR = "algo"


def stage_done(stage_dir: Path) -> dict | None:
    """The stage's summary if it completed (its outputs are then durable), else None."""
    path = stage_dir / DONE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def mark_done(stage_dir: Path, summary: dict) -> dict:
    """Writes DONE.json (the stage's outputs must be in place), then uploads the stage if the run has storage."""
    write_json_atomic(stage_dir / DONE_FILE, summary)
    push_stage(stage_dir)
    return summary


def save_checkpoint(algo, stage_dir: Path, progress: dict) -> Path:
    """RLlib checkpoint + our progress + manifest, renamed into `checkpoint/`; the old one -> `checkpoint.prev/`.

    A kill at any point leaves the newest complete checkpoint in `checkpoint/` or
    (between the two renames) in `checkpoint.prev/`; half-written ones only in
    hidden `.checkpoint.tmp-*` directories, which the next restore removes. With a
    storage path the committed checkpoint is then uploaded (its manifest last).
    """
    latest, previous = stage_dir / CHECKPOINT_DIR, stage_dir / PREVIOUS_DIR
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
            trash = stage_dir / f".{PREVIOUS_DIR}.trash-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(previous, trash)
        os.rename(latest, previous)
    os.rename(tmp, latest)
    fsync_dir(stage_dir)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    push_checkpoint(latest)
    return latest


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


def _remove_stale(stage_dir: Path) -> None:
    """Half-written checkpoints and rotated-out ones of a process that was killed."""
    for stale in stage_dir.glob(f".{CHECKPOINT_DIR}*"):
        if stale.is_dir() and (".tmp-" in stale.name or ".trash-" in stale.name or ".old-" in stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def restore_checkpoint(algo, stage_dir: Path) -> dict | None:
    """Restores the newest usable checkpoint into `algo`; returns its progress, or None if there is none.

    A damaged newest checkpoint is reported (warning on stderr naming it), moved to
    `checkpoint.corrupt/`, and the previous one is used. Raises CheckpointError
    when checkpoints exist but none can be restored.
    """
    if not stage_dir.is_dir():
        return None
    _remove_stale(stage_dir)
    latest, previous = stage_dir / CHECKPOINT_DIR, stage_dir / PREVIOUS_DIR
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
            _warn(f"{stage_dir.name} checkpoint {path} is unusable ({problem}){fallback}")
            continue
        if path == previous and latest in candidates:
            corrupt = stage_dir / CORRUPT_DIR
            shutil.rmtree(corrupt, ignore_errors=True)
            os.rename(latest, corrupt)  # else the next save would rotate it over the good one
            _warn(f"{stage_dir.name}: resuming from the previous checkpoint {path} (iteration "
                  f"{progress['iteration']}); the damaged one was moved to {corrupt}")
        return progress
    raise CheckpointError(f"{stage_dir}: no usable checkpoint ({'; '.join(problems)}). To restart the "
                          f"{stage_dir.name} stage from scratch, delete {stage_dir}/{CHECKPOINT_DIR}*")


def latest_checkpoint_note(stage_dir: Path) -> str:
    """Where a re-run would resume from, for error messages."""
    for path in (stage_dir / CHECKPOINT_DIR, stage_dir / PREVIOUS_DIR):
        if path.exists():
            try:
                iteration = read_checkpoint(path)["iteration"]
            except CheckpointError:
                continue
            return f"the last complete checkpoint is {path} (iteration {iteration})"
    return "no checkpoint was saved yet"


def evaluation_return(result: dict) -> float | None:
    """Mean evaluation return from `train()` results or from `evaluate()`'s own dict."""
    evaluation = result.get("evaluation", result)
    return evaluation.get("env_runners", {}).get("episode_return_mean")


def format_eval(ret: float, score: float | None) -> str:
    return f"return {ret:.1f}" + ("" if score is None else f" score {score:.1f}")


def train_loop(algo, stage_dir: Path, progress: dict, is_finished: Callable[[dict], bool],
               record: Callable[[dict, dict], str], checkpoint_every: int, bar: StageProgress,
               count: Callable[[dict], int]) -> dict:
    """Calls `algo.train()` until `is_finished(progress)`.

    `record(progress, result)` updates progress (and logs the iteration's metrics) and
    returns what `bar` shows beside `count(progress)`. The bar moves after the iteration's
    checkpoint, when one is due, is saved: with `checkpoint_every` 1 an iteration's line means
    it is on disk (the tests kill runs on such lines).
    """
    iterations_since_save = 0
    while not is_finished(progress):
        try:
            result = algo.train()
        except Exception as err:
            text = str(err).strip()
            detail = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
            print(f"ERROR: {stage_dir.name} stage failed in training iteration {progress.get('iteration', 0) + 1} "
                  f"({detail}); {latest_checkpoint_note(stage_dir)}. Re-run the same command to resume from it.",
                  file=sys.stderr, flush=True)
            raise
        progress["iteration"] = progress.get("iteration", 0) + 1
        info = record(progress, result)
        iterations_since_save += 1
        if iterations_since_save >= checkpoint_every or is_finished(progress):
            save_checkpoint(algo, stage_dir, progress)
            iterations_since_save = 0
        bar.update(count(progress), info)
    return progress
