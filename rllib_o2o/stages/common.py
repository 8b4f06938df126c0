"""What stages 1 and 3 share: resumable training loops with atomic checkpoints."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from rllib_o2o.checkpoints import atomic_dir, commit_dir, write_json_atomic

CHECKPOINT_DIR = "checkpoint"
DONE_FILE = "DONE.json"
PROGRESS_FILE = "progress.json"


def stage_done(stage_dir: Path) -> dict | None:
    """The stage's summary if it completed (its outputs are then durable), else None."""
    path = stage_dir / DONE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def mark_done(stage_dir: Path, summary: dict) -> dict:
    write_json_atomic(stage_dir / DONE_FILE, summary)
    return summary


def save_checkpoint(algo, stage_dir: Path, progress: dict) -> None:
    """RLlib checkpoint + our progress, swapped into place in one rename."""
    target = stage_dir / CHECKPOINT_DIR
    tmp = atomic_dir(target)
    try:
        algo.save_to_path(str((tmp / "algo").resolve()))
        (tmp / PROGRESS_FILE).write_text(json.dumps(progress, default=float))
        commit_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_checkpoint(algo, stage_dir: Path) -> dict | None:
    """Restores the last complete checkpoint into `algo`; returns its progress or None."""
    target = stage_dir / CHECKPOINT_DIR
    if not (target / PROGRESS_FILE).exists():
        return None
    algo.restore_from_path(str((target / "algo").resolve()))
    return json.loads((target / PROGRESS_FILE).read_text())


def evaluation_return(result: dict) -> float | None:
    """Mean evaluation return from `train()` results or from `evaluate()`'s own dict."""
    evaluation = result.get("evaluation", result)
    return evaluation.get("env_runners", {}).get("episode_return_mean")


def train_loop(algo, stage_dir: Path, progress: dict, is_finished: Callable[[dict], bool],
               record: Callable[[dict, dict], str], checkpoint_every: int) -> dict:
    """Calls `algo.train()` until `is_finished(progress)`; `record` updates progress, returns a log line."""
    iterations_since_save = 0
    while not is_finished(progress):
        start = time.perf_counter()
        result = algo.train()
        progress["iteration"] = progress.get("iteration", 0) + 1
        line = record(progress, result)
        print(f"{line} [{time.perf_counter() - start:.1f}s]", flush=True)
        iterations_since_save += 1
        if iterations_since_save >= checkpoint_every or is_finished(progress):
            save_checkpoint(algo, stage_dir, progress)
            print(f"checkpoint saved ({stage_dir.name}, iteration {progress['iteration']})", flush=True)
            iterations_since_save = 0
    return progress
