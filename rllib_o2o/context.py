"""What one run knows before any stage runs, made once: `RunContext`.

The config is validated and completed (env, preset, reference scores from the dataset), the
dataset resolved (used in place, fetched, imported or generated) and validated, its meta read,
the method and the preset looked up, the run directory's config.json checked against this run
and storage synced - once, in `RunContext.open`. The stages (`rllib_o2o.stages`) take their
inputs from the context and write their outputs in its run directory; none validates or reads
the dataset's meta again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rllib_o2o.checkpoints import write_json_atomic
from rllib_o2o.config import EMBEDDED_ENV, PipelineConfig
from rllib_o2o.data.fingerprint import DATASET_FINGERPRINT
from rllib_o2o.data.location import fetch_dataset, is_uri
from rllib_o2o.data.schema import META_FILE, DatasetMeta, read_meta
from rllib_o2o.data.sources import D4RL, DIRECTORY, dataset_kind
from rllib_o2o.data.scores import reference_scores
from rllib_o2o.methods import Method
from rllib_o2o.presets import Preset, get_preset, preset_for_dataset
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import RUN_CONFIG_FILE, RUN_DATA_FILE

# One run directory holds the shared offline and alignment stages and one online stage per
# method, so these keys may differ between invocations on the same directory.
PER_METHOD_KEYS = ("method", "variants")
# Where the run lives, not what it computes: a run resumed from storage on another node may
# have another local path (the storage location is STORAGE_PATH/<run dir name>).
LOCATION_KEYS = ("out", "storage_path")
# How fast the run computes or how it is watched, not what it computes: a run resumed on a node
# with other cores may choose other torch threads, and any run may be resumed verbose, into W&B or
# with other callbacks watching it.
EXECUTION_KEYS = ("torch_threads", "verbose", "wandb_project", "online_callbacks")


@dataclass(frozen=True)
class RunContext:
    """One run's inputs, fixed for all its stages (the config is a completed copy: never mutate it)."""

    config: PipelineConfig  # completed: env, preset and reference scores filled in from the dataset
    run: RunDir  # where the stages write, with its mirror (storage) if any
    dataset_dir: Path  # a local dataset directory (the given one, or the run's fetched/imported/generated copy)
    meta: DatasetMeta
    stats: object  # the dataset's validation (data.validate.DatasetStats): its returns, episodes, rows
    method: Method
    preset: Preset  # the dataset's preset with the config's overrides

    @classmethod
    def open(cls, cfg: PipelineConfig, run: RunDir, validated=None) -> RunContext:
        """Resolves and validates the dataset, completes a copy of `cfg`, checks that `run` holds no other
        run (locally and on storage), writes its config.json on the first invocation, then syncs storage.

        `run`: the run directory, locked by the caller. `validated`: the preflight's DatasetStats, reused
        when it was of the same directory (so the dataset is validated once per invocation)."""
        from rllib_o2o.data.rollouts import check_registered
        from rllib_o2o.data.validate import validate_dataset

        run.path.mkdir(parents=True, exist_ok=True)
        dataset_dir = resolve_dataset(cfg, run)
        meta = read_meta(dataset_dir)
        env = cfg.env or meta.env_id
        check_registered(env)
        if validated is not None and Path(validated.path).resolve() == Path(dataset_dir).resolve():
            stats = validated
        else:
            stats = validate_dataset(dataset_dir, env_id=env)
        refs = (cfg.ref_min_score, cfg.ref_max_score)
        if cfg.ref_min_score is None:
            refs = (meta.ref_min_score, meta.ref_max_score)
            refs = refs if None not in refs else (reference_scores(env) or refs)
        preset_name = cfg.preset or preset_for_dataset(Path(cfg.dataset).name if cfg.dataset else dataset_dir.name)
        config = replace(cfg, env=env, ref_min_score=refs[0], ref_max_score=refs[1], preset=preset_name)
        if run.config_path.exists():
            refuse_other_run(json.loads(run.config_path.read_text()), config, str(run.path))
        if run.mirror is not None:
            refuse_other_run(run.stored_json(RUN_CONFIG_FILE), config, run.mirror.uri)
        refuse_other_data(run, stats.fingerprint, str(dataset_dir))
        if not run.config_path.exists():
            write_json_atomic(run.config_path, asdict(config))
        if not run.data_fingerprint_path.exists():
            write_json_atomic(run.data_fingerprint_path, {DATASET_FINGERPRINT: stats.fingerprint})
        run.sync()  # with storage: what the run dir lacks comes down, what storage lacks goes up
        preset = get_preset(preset_name, clip_beta=cfg.clip_beta, w_schedule=cfg.w_schedule,
                            seed_episodes=cfg.seed_episodes, entropy_scale=cfg.entropy_scale)
        return cls(config=config, run=run, dataset_dir=Path(dataset_dir), meta=meta, stats=stats,
                   method=config.resolved_method(), preset=preset)


def refuse_other_run(previous: dict | None, cfg: PipelineConfig, where: str) -> None:
    """A run directory (or its storage) holding another run is never mixed with this one."""
    ignored = PER_METHOD_KEYS + LOCATION_KEYS + EXECUTION_KEYS
    changed = sorted(k for k in previous or {} if k not in ignored and previous.get(k) != asdict(cfg).get(k))
    if changed:
        raise ValueError(f"{where} holds a run with a different config ({', '.join(changed)} differ); "
                         "use another --out to start a new run")


def refuse_other_data(run: RunDir, fingerprint: str, dataset: str) -> None:
    """A run is never continued on other rows than it started on (locally and on storage): its stages would
    mix two datasets, as when one name's data is regenerated on a machine with another CPU (docs/data.md).
    Run directories from before the fingerprint was recorded are not checked."""
    local = run.data_fingerprint_path
    recorded = [(str(local), json.loads(local.read_text()) if local.exists() else None)]
    if run.mirror is not None:
        recorded.append((f"{run.mirror.uri}/{RUN_DATA_FILE}", run.stored_json(RUN_DATA_FILE)))
    for where, previous in recorded:
        if previous is not None and previous[DATASET_FINGERPRINT] != fingerprint:
            raise ValueError(f"{where}: the run was trained on other data (fingerprint "
                             f"{previous[DATASET_FINGERPRINT]}) than {dataset} holds now ({fingerprint}); give "
                             "it the data it started on, or start a new run with another --out")


def embedded_default_dataset(out: Path, torch_threads: int | str = "auto") -> Path:
    """The embedded default's data: a small Pendulum-v1 medium dataset, generated once under `out`."""
    from rllib_o2o.stages.collect import CollectSettings, collect

    settings = CollectSettings(env_id=EMBEDDED_ENV, kinds=("medium",), num_transitions=5_000,
                               train_env_steps=8_000, env_steps_per_iteration=500, random_warmup_steps=500,
                               medium_target_score=40.0)
    return collect(settings, out, torch_threads=torch_threads)["medium"]


# The kinds of a run's dataset besides data.sources' (DIRECTORY used in place, D4RL and MINARI to import):
EMBEDDED, URI, IMPORTED = "embedded", "uri", "imported"  # generated; fetched; imported by an earlier invocation


@dataclass(frozen=True)
class DatasetLocation:
    """Where a run's dataset is: its kind and the local directory that holds (or will hold) it."""

    kind: str  # EMBEDDED, URI, IMPORTED, DIRECTORY, D4RL or MINARI
    directory: Path  # the dataset directory the run reads
    ready: bool  # the directory holds the dataset already (nothing to generate, fetch or import)


def locate_dataset(cfg: PipelineConfig, run: RunDir) -> DatasetLocation:
    """The one decision of where `cfg.dataset` comes from, made without writing; the preflight
    (`preflight.check_dataset`) checks what it names, `resolve_dataset` makes it."""
    if cfg.dataset is None:
        return DatasetLocation(EMBEDDED, run.datasets_path, False)  # `collect` reuses what it made before
    if is_uri(cfg.dataset):
        fetched = run.fetched_dataset_path
        return DatasetLocation(URI, fetched, (fetched / META_FILE).exists())
    imported = run.imported_dataset_path
    if (imported / META_FILE).exists():
        return DatasetLocation(IMPORTED, imported, True)
    kind = dataset_kind(cfg.dataset)  # raises for a missing path or one that holds no dataset
    if kind == DIRECTORY:
        return DatasetLocation(DIRECTORY, Path(cfg.dataset), True)
    return DatasetLocation(kind, imported, False)


def resolve_dataset(cfg: PipelineConfig, run: RunDir) -> Path:
    """A dataset directory for `cfg.dataset`: as is, or fetched, imported from D4RL HDF5 / Minari, or generated."""
    where = locate_dataset(cfg, run)
    if where.ready:
        return where.directory
    if where.kind == EMBEDDED:
        return embedded_default_dataset(where.directory, cfg.torch_threads)
    if where.kind == URI:
        return fetch_dataset(cfg.dataset, where.directory)
    if where.kind == D4RL:
        from rllib_o2o.data.d4rl import import_d4rl

        if not cfg.env:
            raise ValueError("--env is required to import a D4RL file")
        return import_d4rl(cfg.dataset, env_id=cfg.env, out_dir=where.directory)
    from rllib_o2o.data.minari_import import import_minari

    return import_minari(cfg.dataset, out_dir=where.directory, env_id=cfg.env)
