"""A tune experiment: stages 1-2 once (as `rllib-o2o run`), then Tune's trials of the online stage.

Ray, Tune and the pipeline are imported inside the functions that run them, so the package can
be imported by the CLI without them.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path

from rllib_o2o.methods import needs_alignment
from rllib_o2o.tune.settings import ONLINE_FIELDS, TuneSettings, trial_algo_config, trial_settings
from rllib_o2o.tune.space import max_seed_episodes, param_space
from rllib_o2o.tune.summary import summarize

def ensure_aligned(cfg, run):
    """Runs (or skips, when done) the stages before the online one, as the pipeline plans them, in `run`
    (`pipeline.open_run(cfg)`, locked by the caller); returns the run's `context.RunContext`."""
    from rllib_o2o.console import Console
    from rllib_o2o.context import RunContext
    from rllib_o2o.pipeline import plan, run_stages

    if not needs_alignment(cfg.method, cfg.variants):
        raise ValueError(f"tune searches ACA's online knobs from an aligned critic; method {cfg.method!r} "
                         f"has no alignment stage")
    ctx = RunContext.open(cfg, run)
    align_stage = run.alignment_stage(cfg.method, cfg.variants)
    if align_stage.done() is not None:
        print(f"tune: using the aligned checkpoint in {align_stage.path}", flush=True)
    else:
        run_stages(ctx, plan(ctx)[:-1], Console())  # offline (or its import), alignment: not the online stage
    return ctx


def _search_alg(settings: TuneSettings, metric: str, seed: int):
    from ray.tune.search import ConcurrencyLimiter

    use = settings.search
    if use == "auto":
        try:
            import optuna  # noqa: F401

            use = "optuna"
        except ImportError:
            use = "random"
    if use == "random":
        return None, "random"  # Tune's BasicVariantGenerator samples the space at random
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as err:
        raise ValueError(f"--search optuna needs optuna installed ({err})") from None
    searcher = OptunaSearch(metric=metric, mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
    if settings.max_concurrent_trials:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent_trials)
    return searcher, "optuna"


def _scheduler(settings: TuneSettings, metric: str, iterations: int):
    if settings.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace = settings.grace_period or max(1, iterations // 4)
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode="max", max_t=iterations,
                         grace_period=min(grace, iterations), reduction_factor=settings.reduction_factor)


def experiment_path(settings: TuneSettings, run_dir: Path, run_storage_path: str | None = None) -> str:
    """--tune-storage-path/NAME, else beside the run: RUN_DIR/tune/NAME, or on the run's own storage
    (STORAGE_PATH/<run dir name>/tune/NAME) when the pipeline has a storage path."""
    from rllib_o2o.rundir.mirror import run_uri
    from rllib_o2o.rundir.names import TUNE_DIR

    default = (run_uri(run_storage_path, run_dir) + f"/{TUNE_DIR}" if run_storage_path
               else str((run_dir / TUNE_DIR).resolve()))
    storage = settings.storage_path or default
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return storage.rstrip("/") + "/" + settings.name


def run_tune(cfg, settings: TuneSettings, online_overrides: dict | None = None) -> dict:
    """Aligns once (stages 1-2 of cfg), then searches the online stage; returns the summary.

    `online_overrides` (ONLINE_FIELDS only) change the online stage of the trials without
    touching the aligned run's saved config (e.g. a shorter online budget for the search).
    Needs `ray.init()` (or a cluster) beforehand. Holds the run directory's lock throughout.
    """
    import ray

    from rllib_o2o.pipeline import open_run

    settings.validate()
    if not ray.is_initialized():
        raise RuntimeError("run_tune needs Ray: call ray.init() (or join a cluster) first")
    run = open_run(cfg)
    with run.lock():
        return _run_tune(cfg, settings, online_overrides, run)


def _run_tune(cfg, settings: TuneSettings, online_overrides: dict | None, run) -> dict:
    """`run_tune` in its run directory `run`, locked."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from rllib_o2o.algorithms.o2o_sac import O2OSAC
    from rllib_o2o.checkpoints import load_module_checkpoint, write_json_atomic
    from rllib_o2o.data.schema import read_dataset, top_k_episodes
    from rllib_o2o.stages.online import require_offline_temperature
    from rllib_o2o.tune.trainable import ACATrainable

    run_dir = run.path
    ctx = ensure_aligned(cfg, run)
    cfg, dataset_dir, meta = ctx.config, ctx.dataset_dir, ctx.meta  # the run's config, completed from its dataset
    base = asdict(cfg)
    for key, value in (online_overrides or {}).items():
        if key not in ONLINE_FIELDS:
            raise ValueError(f"{key} belongs to stages 1-2 of the aligned run and cannot change in a search "
                             f"(changeable: {', '.join(ONLINE_FIELDS)})")
        base[key] = value
    trial_cfg, preset, _ = trial_settings(base, {})
    trial_cfg.validate()
    aligned_weights, aligned_meta = load_module_checkpoint(run.alignment_stage(cfg.method, cfg.variants).module_path,
                                                           expect={"stage": "aligned"})
    require_offline_temperature(cfg.method, aligned_meta, cfg.variants)

    k_max = max_seed_episodes(settings.space, preset.seed_episodes)
    seed_pool = None
    if k_max > 0:
        transitions, _ = read_dataset(dataset_dir)
        seed_pool = top_k_episodes(transitions, k_max)
    iterations = math.ceil(trial_cfg.online_steps / trial_cfg.eval_every)
    metric = "normalized_score"
    if trial_cfg.ref_min_score is None or trial_cfg.ref_max_score is None:
        print("tune: no reference scores for this env/dataset: normalized_score is the raw return", flush=True)

    _, _, probe = trial_algo_config(base, {}, aligned_meta, settings.placement_strategy)
    resources = O2OSAC.default_resource_request(probe)
    trainable = tune.with_resources(
        tune.with_parameters(ACATrainable, base=base, aligned_weights=aligned_weights,
                             aligned_meta=aligned_meta, seed_pool=seed_pool,
                             action_low=list(meta.action_low), action_high=list(meta.action_high)),
        resources)

    # A snapshot of the experiment state follows every `num_to_keep` trial checkpoints (what a
    # restore needs); Tune warns about that by default.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    path = experiment_path(settings, run_dir, cfg.storage_path)
    storage, name = path.rsplit("/", 1)
    start = time.perf_counter()
    if Tuner.can_restore(path):
        print(f"tune: resuming the experiment in {path} (its own search space, sampler and trial count "
              "apply; pick another --name for a new experiment)", flush=True)
        tuner = Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher, search_name = _search_alg(settings, metric, trial_cfg.seed)
        scheduler = _scheduler(settings, metric, iterations)
        print(f"tune: {settings.num_samples} trials x {iterations} iterations of {trial_cfg.eval_every} env steps, "
              f"search {search_name}, scheduler {settings.scheduler}, resources per trial "
              f"{resources.bundles} ({settings.placement_strategy}), experiment {path}", flush=True)
        tuner = Tuner(
            trainable,
            param_space=param_space(settings.space),
            tune_config=TuneConfig(num_samples=settings.num_samples, search_alg=searcher, scheduler=scheduler,
                                   max_concurrent_trials=None if searcher else settings.max_concurrent_trials,
                                   trial_name_creator=lambda t: f"aca_{t.trial_id}",
                                   trial_dirname_creator=lambda t: f"aca_{t.trial_id}"),
            run_config=RunConfig(
                name=name, storage_path=storage, verbose=settings.verbose,
                stop={"training_iteration": iterations},
                failure_config=FailureConfig(max_failures=settings.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=settings.num_to_keep,
                                                   checkpoint_frequency=max(1, trial_cfg.checkpoint_every),
                                                   checkpoint_at_end=True),
            ),
        )
    results = tuner.fit()
    summary = summarize(results, trial_cfg.online_steps, metric)
    summary.update({"experiment": path, "aligned_run": str(run_dir), "seconds_this_invocation":
                    time.perf_counter() - start, "online_steps": trial_cfg.online_steps,
                    "eval_every": trial_cfg.eval_every, "space": settings.space})
    write_json_atomic(run.tune_summary_path(settings.name), summary)
    run.push_file(run.tune_summary_path(settings.name))
    if "://" not in path:
        write_json_atomic(Path(path) / "summary.json", summary)
    return summary
