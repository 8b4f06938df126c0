"""Checks `rllib-o2o run` makes before Ray starts or anything is written.

Each problem raises one exception with a one-line message (the CLI prints it and
exits 2): the config's values, wandb when a W&B project is asked for, relative paths
that a Ray job with an uploaded working dir would lose, the output path (it must be, or
be creatable as, a writable directory), `--storage-path` (it must open and take a probe file,
which is removed), the dataset against its dataset.json and the env's spaces,
the env id, and an `--offline-checkpoint`'s compatibility with the dataset and
the run's network sizes. Nothing here writes to the run directory; the pipeline
(`rllib_o2o.context.RunContext.open`) repeats the dataset checks on what it imports.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# Ray Jobs puts the job's config (with its runtime_env) in every driver's environment under this name.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def check_output_dir(out: str | os.PathLike) -> None:
    """Raises ValueError unless `out` is a writable directory or can be created as one.

    Writability is tested by creating (and removing) a temp file in `out` or in its
    nearest existing ancestor: permission bits alone mislead (root ignores them,
    read-only mounts ignore them).
    """
    out = Path(out)
    existing = out
    while not existing.exists() and not existing.is_symlink():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing.exists() else "does not exist (broken link?)"
        if existing == out:
            raise ValueError(f"--out {out}: {what}, not a directory")
        raise ValueError(f"--out {out}: cannot create it, {existing} {what}, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rllib-o2o-write-test-", dir=existing)
    except OSError as err:
        where = "" if existing == out else f" (cannot create it in {existing})"
        raise ValueError(f"--out {out}: not writable{where}: {err.strerror or err}") from None
    os.close(fd)
    os.unlink(probe)


def check_dataset(cfg):
    """Validates the dataset (a directory, the run's imported copy, or a D4RL file) without writing.

    Returns (meta, stats): its metadata, or None for a Minari dataset (checked only to exist; the
    import validates it), a URI not fetched yet and the embedded default (both validated by the
    pipeline once they are on local disk); and a dataset directory's validation (DatasetStats,
    which the pipeline then reuses), else None.
    """
    from rllib_o2o.context import locate_dataset
    from rllib_o2o.data.schema import read_meta
    from rllib_o2o.data.sources import D4RL, MINARI
    from rllib_o2o.data.validate import validate_dataset
    from rllib_o2o.rundir.layout import RunDir

    where = locate_dataset(cfg, RunDir(cfg.out))  # the pipeline's own decision, nothing written
    if not where.ready:
        if where.kind == D4RL:
            from rllib_o2o.data.d4rl import load_d4rl

            if not cfg.env:
                raise ValueError("--env is required to import a D4RL file")
            return load_d4rl(cfg.dataset, cfg.env)[1], None  # every check of the import, nothing written
        if where.kind == MINARI:  # it must at least exist
            from rllib_o2o.data.minari_import import _data_dir

            _data_dir(cfg.dataset)
        return None, None  # the embedded default and a URI are validated once they are on local disk
    stats = validate_dataset(where.directory, env_id=cfg.env)
    return read_meta(where.directory), stats


def check_offline_checkpoint(cfg, meta) -> None:
    """Refuses an `--offline-checkpoint` whose spaces, env or network sizes do not fit the run."""
    from rllib_o2o.policy_import import load_reference_actor

    if not cfg.offline_checkpoint or meta is None:
        return
    env = cfg.env or meta.env_id
    ref = load_reference_actor(cfg.offline_checkpoint, meta.obs_dim, meta.act_dim, env_id=env)
    if list(ref.hidden) != list(cfg.hidden):
        raise ValueError(f"{cfg.offline_checkpoint}: its policy has hidden sizes {ref.hidden}, the run uses "
                         f"{list(cfg.hidden)}; set hidden: {ref.hidden} in --config")


def in_uploaded_working_dir() -> bool:
    """True in the driver of `ray job submit --working-dir`: its cwd is a temporary copy of the
    uploaded files (git-ignored ones left out), deleted with the job."""
    try:
        job = json.loads(os.environ.get(RAY_JOB_CONFIG_ENV) or "{}")
    except ValueError:
        return False
    return isinstance(job, dict) and bool((job.get("runtime_env") or {}).get("working_dir"))


def check_job_paths(cfg) -> None:
    """Refuses relative paths that cannot work in a job with an uploaded working dir: an `--out`
    there would be deleted with the job, and a dataset under a git-ignored folder never arrives."""
    from rllib_o2o.data.schema import DatasetError
    from rllib_o2o.data.sources import dataset_kind

    if not in_uploaded_working_dir():
        return
    if not Path(cfg.out).is_absolute() and cfg.storage_path is None:
        raise ValueError(f"--out {cfg.out}: a relative path in a `ray job submit --working-dir` job is inside the "
                         "job's temporary copy of the working dir and is deleted with the job; give an absolute "
                         "path that every node mounts, or --storage-path (docs/cluster.md)")
    if cfg.dataset and "://" not in str(cfg.dataset) and not Path(cfg.dataset).is_absolute():
        try:
            dataset_kind(cfg.dataset)
        except DatasetError:
            raise ValueError(f"--dataset {cfg.dataset}: not in the job's working dir (`--working-dir` uploads "
                             "only what git does not ignore, and data/ is ignored); give an absolute path that "
                             "every node mounts or a URI (docs/cluster.md)") from None


def check_before_training(cfg):
    """All of the above, in the order a user would fix them; raises on the first problem.

    Returns the dataset directory's validation (DatasetStats; None when the dataset is validated
    later, see `check_dataset`), for `run_pipeline` not to read the dataset again."""
    from rllib_o2o.data.rollouts import check_registered
    from rllib_o2o.metrics_log import require_wandb

    cfg.validate()
    require_wandb(cfg.wandb_project)
    check_job_paths(cfg)
    check_output_dir(cfg.out)
    if cfg.storage_path is not None:
        from rllib_o2o.rundir.mirror import check_storage

        check_storage(cfg.storage_path, cfg.out)
    meta, stats = check_dataset(cfg)
    env = cfg.env or (meta.env_id if meta is not None else None)
    if env is not None:
        check_registered(env)
    check_offline_checkpoint(cfg, meta)
    return stats
