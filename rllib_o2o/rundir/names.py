"""Every name inside a run directory, shared by the code that writes it and the code that reads it.

Pure: no I/O. `layout.RunDir` joins these to paths; a stage directory's own names are
`StageDir`'s, `Mirror`'s (what it uploads and trusts) and the exporter's.
"""

from __future__ import annotations

from rllib_o2o.methods import Variants, get_method

# -- the run directory ------------------------------------------------------------------
RUN_CONFIG_FILE = "config.json"  # the run's config, written by context.RunContext.open: what makes it a run
RUN_DATA_FILE = "data-fingerprint.json"  # the rows the run trains on (`context.refuse_other_data`)
DATASETS_DIR = "datasets"  # datasets made (the embedded default), imported or fetched: local only, never mirrored
IMPORTED_DATASET_DIR = f"{DATASETS_DIR}/imported"  # a D4RL file or Minari dataset, imported
FETCHED_DATASET_DIR = f"{DATASETS_DIR}/fetched"  # a dataset URI, copied
TUNE_DIR = "tune"  # `rllib-o2o tune`'s experiments, unless --tune-storage-path says otherwise
LOCK_FILE = ".run.lock"  # flock'ed while a process runs in the directory (`lock.RunLock`)
LEASE_FILE = ".run.lease"  # the same on storage: a lease with an expiry (not .json: never synced)
BENCH_TASKS_FILE = "bench-tasks.json"  # in a benchmark directory: where and how each stage task ran

# -- a stage directory ------------------------------------------------------------------
CHECKPOINT_DIR = "checkpoint"  # the newest committed checkpoint
PREVIOUS_DIR = "checkpoint.prev"  # the one before it
CORRUPT_DIR = "checkpoint.corrupt"  # a newest checkpoint that did not restore, kept for inspection
DONE_FILE = "DONE.json"  # the stage's summary, written once its outputs are durable
PROGRESS_FILE = "progress.json"  # inside a checkpoint: the stage's loop state (iteration, curve)
ALGO_DIR = "algo"  # inside a checkpoint: RLlib's algorithm state (`save_to_path`)
# In a stage's progress (so in its checkpoints) and DONE.json: the checkpoint each later invocation resumed
# from (offline: its iteration, online: its env steps), in order, for the invocations that saved progress
# after resuming (a resume killed before its first save leaves no entry); [] for a stage run in one go.
RESUMED_FROM = "resumed_from"


def stage_lock_file(stage: str) -> str:
    """flock'ed by a process that runs only `stage` of the run (a benchmark's stage task; `lock.RunLock`)."""
    return f".{stage}.lock"


def stage_lease_file(stage: str) -> str:
    """The same on storage: the stage's lease (not .json: never synced)."""
    return f".{stage}.lease"


def bench_task_file_name(stage: str) -> str:
    """In a run directory: the attempts of the benchmark task that ran `stage` (node, pid, start, end)."""
    return f"bench-task-{stage}.json"


def offline_stage_name(method: str, variants: Variants | None = None) -> str | None:
    """The offline stage `method` starts from (shared by the methods with the same kind), None without one.

    `variants`: the run's named variants (`PipelineConfig.variants`), when `method` may be one."""
    kind = get_method(method, variants).offline
    return None if kind is None else ("offline" if kind == "sacml" else f"offline-{kind}")


def alignment_stage_name(method: str, variants: Variants | None = None) -> str:
    """The default ACA's alignment is `alignment/`; methods aligning otherwise get their settings as a suffix."""
    tag = get_method(method, variants).alignment_tag()
    return f"alignment-{tag}" if tag else "alignment"


def online_stage_name(method: str) -> str:
    return "online" if method == "aca" else f"online-{method}"


def stage_name(method: str, role: str, variants: Variants | None = None) -> str | None:
    """The directory of `method`'s stage of role "offline", "alignment" or "online" (None: it has no offline stage)."""
    names = {"offline": offline_stage_name, "alignment": alignment_stage_name, "online": online_stage_name}
    if role not in names:
        raise ValueError(f"role must be one of {sorted(names)}, got {role!r}")
    return online_stage_name(method) if role == "online" else names[role](method, variants)


def results_file_name(method: str) -> str:
    return "results.json" if method == "aca" else f"results-{method}.json"


def tune_summary_file_name(experiment: str) -> str:
    return f"tune_{experiment}_summary.json"
