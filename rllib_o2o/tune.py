"""Ray Tune search over ACA's online stage, every trial starting from ONE aligned checkpoint.

Stages 1 and 2 (offline pre-training, alignment) run once, exactly as in
`rllib-o2o run` (same run directory, skipped when already done); each trial then
fine-tunes the same aligned module online with its own ACA knobs:

    clip_beta (beta), w0 / w_T / w_min (the w schedule [w0, T, w_min]), actor_lr,
    critic_lr, alpha_lr, entropy_scale (c_H), seed_episodes (offline trajectories
    seeded into the buffer), seed

The aligned weights and the highest-return offline episodes are shipped to the
trials through the object store, so a trial on any node needs no access to the
run directory. One trial iteration = `eval_every` env steps + one evaluation;
trials report `normalized_score` (the score at that evaluation) and `dip` (the
lowest score in the first 10% of online steps, step 0 included), checkpoint
every `checkpoint_every` iterations, and are stopped early by ASHA. Re-running
the same command restores an interrupted experiment (`Tuner.restore`): finished
trials are kept, unfinished and errored ones continue from their last checkpoint.

Module-level imports are stdlib only (`rllib-o2o --help` must stay light); the
Tune trainable is built on first use (`ACATrainable`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rllib_o2o.methods import needs_alignment

KNOBS = ("clip_beta", "w0", "w_T", "w_min", "actor_lr", "critic_lr", "alpha_lr", "entropy_scale",
         "seed_episodes", "seed")

# Around the spec's per-dataset table; knobs left out keep the run's preset / defaults.
DEFAULT_SPACE = {
    "clip_beta": {"uniform": [3.0, 15.0]},
    "w_T": [10, 40, 100],
    "w_min": [0.0, 0.5, 1.0],
    "actor_lr": {"loguniform": [1e-4, 1e-3]},
    "critic_lr": {"loguniform": [1e-4, 1e-3]},
    "entropy_scale": [0.5, 1.0],
    "seed_episodes": [0, 50],
}

# Online-stage options a tune run may change relative to the aligned run it starts from.
ONLINE_FIELDS = ("online_steps", "eval_every", "eval_episodes", "num_env_runners", "num_envs_per_env_runner",
                 "rollout_fragment_length", "num_gpus_per_learner", "seed", "preset", "max_episode_steps",
                 "checkpoint_every", "torch_threads")


@dataclass
class TuneSettings:
    name: str = "aca-tune"
    storage_path: str | None = None   # local dir or URI (s3://, gs://); default RUN_DIR/tune (or its storage)
    num_samples: int = 8
    max_concurrent_trials: int | None = None
    search: str = "auto"              # auto (Optuna if installed, else random) | optuna | random
    scheduler: str = "asha"           # asha | fifo
    grace_period: int | None = None   # ASHA: iterations before a trial may be stopped
    reduction_factor: float = 3.0
    space: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_SPACE))
    placement_strategy: str = "SPREAD"
    max_failures: int = 2             # a failed trial restarts from its last checkpoint this often
    num_to_keep: int = 2              # checkpoints kept per trial
    verbose: int = 1

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.search not in ("auto", "optuna", "random"):
            raise ValueError(f"search must be auto, optuna or random, got {self.search!r}")
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError(f"scheduler must be asha or fifo, got {self.scheduler!r}")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"placement_strategy must be PACK/SPREAD/STRICT_PACK/STRICT_SPREAD, "
                             f"got {self.placement_strategy!r}")
        unknown = sorted(set(self.space) - set(KNOBS))
        if unknown:
            raise ValueError(f"unknown search-space key(s) {unknown}; searchable: {list(KNOBS)}")
        for name, spec in self.space.items():
            _domain(name, spec)  # raises on a malformed spec


# -- search space ------------------------------------------------------------------

def _domain(name: str, spec):
    """A Tune domain from a config-file spec: [a, b, ...] = choice, {"uniform": [lo, hi]},
    {"loguniform": [lo, hi]}, {"randint": [lo, hi]} (hi exclusive), or a constant."""
    from ray import tune

    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"search space {name}: empty choice list")
        return tune.choice(list(spec))
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(f"search space {name}: one of uniform/loguniform/randint/choice, got {spec}")
        (kind, args), = spec.items()
        makers = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint,
                  "choice": lambda *values: tune.choice(list(values))}
        if kind not in makers or not isinstance(args, (list, tuple)):
            raise ValueError(f"search space {name}: unknown spec {spec}")
        if kind != "choice" and (len(args) != 2 or not args[0] < args[1]):
            raise ValueError(f"search space {name}: {kind} needs [low, high] with low < high, got {args}")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"search space {name}: loguniform needs low > 0, got {args}")
        return makers[kind](*args)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return spec
    raise ValueError(f"search space {name}: cannot read {spec!r}")


def param_space(space: dict) -> dict:
    return {name: _domain(name, spec) for name, spec in space.items()}


def max_seed_episodes(space: dict, preset_value: int) -> int:
    """The largest K a trial may seed, so the driver ships just those episodes."""
    spec = space.get("seed_episodes")
    if spec is None:
        return int(preset_value)
    if isinstance(spec, (list, tuple)):
        return int(max(spec))
    if isinstance(spec, dict):
        (kind, args), = spec.items()
        return int(max(args)) if kind in ("randint", "choice") else int(math.ceil(max(args)))
    return int(spec)


def trial_settings(base: dict, knobs: dict):
    """(PipelineConfig, Preset, learning rates) of one trial: the base run with its knobs applied."""
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.presets import get_preset

    cfg = PipelineConfig(**base)
    if "seed" in knobs:
        cfg.seed = int(knobs["seed"])
    preset = get_preset(cfg.preset, clip_beta=cfg.clip_beta, w_schedule=cfg.w_schedule,
                        seed_episodes=cfg.seed_episodes, entropy_scale=cfg.entropy_scale)
    w0, horizon, w_min = preset.w_schedule
    w0 = float(knobs.get("w0", w0))
    horizon = float(knobs.get("w_T", horizon))
    w_min = min(float(knobs.get("w_min", w_min)), w0)  # the schedule needs w_min <= w0
    preset = get_preset(cfg.preset, clip_beta=float(knobs.get("clip_beta", preset.clip_beta)),
                        w_schedule=(w0, horizon, w_min),
                        seed_episodes=int(knobs.get("seed_episodes", preset.seed_episodes)),
                        entropy_scale=float(knobs.get("entropy_scale", preset.entropy_scale)))
    lrs = {k: float(knobs[k]) for k in ("actor_lr", "critic_lr", "alpha_lr") if k in knobs}
    return cfg, preset, lrs


def trial_algo_config(base: dict, knobs: dict, aligned_meta: dict, placement_strategy: str = "PACK"):
    """The trial's O2OSACConfig: the pipeline's own online config plus the trial's knobs; `aligned_meta`:
    the aligned checkpoint's meta (the actor's activation, the offline temperature)."""
    from rllib_o2o.stages.online import online_config

    cfg, preset, lrs = trial_settings(base, knobs)
    config = online_config(cfg, preset, aligned_meta.get("actor_activation", "relu"),
                           offline_temperature=aligned_meta.get("offline_temperature"))
    if lrs:
        config.training(**lrs)
    config.resources(placement_strategy=placement_strategy)
    return cfg, preset, config


# -- the trainable -------------------------------------------------------------------

def _make_trainable():
    import numpy as np
    from ray import tune

    from rllib_o2o.data.schema import top_k_episodes
    from rllib_o2o.stages.common import evaluation_return
    from rllib_o2o.stages.online import dip

    class ACATrainable(tune.Trainable):
        """One ACA online fine-tuning run from the shared aligned module; one step = one evaluation."""

        def setup(self, config, *, base, aligned_weights, aligned_meta, seed_pool, action_low, action_high):
            self._cfg, self._preset, algo_config = trial_algo_config(base, config, aligned_meta)
            self._weights = aligned_weights
            self._seed_pool = seed_pool
            self._bounds = (np.asarray(action_low, np.float32), np.asarray(action_high, np.float32))
            self._curve: list[dict] = []
            self._restored_env_steps = 0
            self.algo = algo_config.build_algo()

        def _score(self, ret):
            score = self._cfg.score(ret)
            return score if score is not None else ret  # no reference scores: rank by return

        def _start_from_aligned(self):
            algo = self.algo
            weights = self._weights
            algo.call_learner(lambda learner: learner.set_module_weights(weights))
            algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group,
                                               inference_only=True)
            k = self._preset.seed_episodes
            if k and self._seed_pool is not None and len(self._seed_pool["rewards"]):
                best = top_k_episodes(self._seed_pool, k)
                algo.replay.add_transitions(best, *self._bounds, protected=True)
            ret = evaluation_return(algo.evaluate())
            self._curve.append({"env_steps": 0, "return": ret, "score": self._score(ret)})

        def step(self):
            if not self._curve:
                self._start_from_aligned()
            result = self.algo.train()
            ret = evaluation_return(result)
            steps = self.algo.env_steps_sampled
            self._curve.append({"env_steps": steps, "return": ret, "score": self._score(ret)})
            learner = result.get("learners", {}).get("default_policy", {})
            return {
                "normalized_score": self._curve[-1]["score"],
                "episode_return": ret,
                "env_steps": steps,
                "dip": dip(self._curve, self._cfg.online_steps),
                "score_at_0": self._curve[0]["score"],
                "reference_weight": learner.get("reference_weight"),
                "alpha": learner.get("alpha"),
                "restored_env_steps": self._restored_env_steps,
                "done": steps >= self._cfg.online_steps,
            }

        def save_checkpoint(self, checkpoint_dir):
            self.algo.save_to_path(os.path.join(checkpoint_dir, "algo"))
            Path(checkpoint_dir, "progress.json").write_text(json.dumps({"curve": self._curve}, default=float))

        def load_checkpoint(self, checkpoint):
            checkpoint_dir = checkpoint if isinstance(checkpoint, str) else checkpoint["checkpoint_dir"]
            self.algo.restore_from_path(os.path.join(checkpoint_dir, "algo"))
            self._curve = json.loads(Path(checkpoint_dir, "progress.json").read_text())["curve"]
            self._restored_env_steps = self.algo.env_steps_sampled
            print(f"trial {self.trial_id}: restored at {self._restored_env_steps} env steps", flush=True)

        def cleanup(self):
            self.algo.stop()

    ACATrainable.__module__ = __name__
    ACATrainable.__qualname__ = "ACATrainable"
    return ACATrainable


_TRAINABLE = None


def __getattr__(name):  # PEP 562: build the Tune class only when asked for (keeps imports light)
    global _TRAINABLE
    if name == "ACATrainable":
        if _TRAINABLE is None:
            _TRAINABLE = _make_trainable()
        return _TRAINABLE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- stages 1-2, once -----------------------------------------------------------------

def ensure_aligned(cfg, run):
    """Runs (or skips, when done) stages 1 and 2 of the pipeline in `run` (`pipeline.open_run(cfg)`,
    locked by the caller); returns (dataset_dir, meta)."""
    from rllib_o2o.pipeline import prepare, run_offline_and_alignment

    if not needs_alignment(cfg.method):
        raise ValueError(f"tune searches ACA's online knobs from an aligned critic; method {cfg.method!r} "
                         f"has no alignment stage")
    dataset_dir, meta, _ = prepare(cfg, run)
    align_stage = run.alignment_stage(cfg.method)
    if align_stage.done() is not None:
        print(f"tune: using the aligned checkpoint in {align_stage.path}", flush=True)
    else:
        from rllib_o2o.console import Console
        from rllib_o2o.metrics_log import MetricsLog

        from rllib_o2o.data.shared import SharedDataset

        run_offline_and_alignment(cfg, run, SharedDataset(dataset_dir), meta, Console(), MetricsLog())
    return dataset_dir, meta


# -- the experiment --------------------------------------------------------------------

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

    run_dir = run.path
    dataset_dir, meta = ensure_aligned(cfg, run)
    base = asdict(cfg)
    for key, value in (online_overrides or {}).items():
        if key not in ONLINE_FIELDS:
            raise ValueError(f"{key} belongs to stages 1-2 of the aligned run and cannot change in a search "
                             f"(changeable: {', '.join(ONLINE_FIELDS)})")
        base[key] = value
    trial_cfg, preset, _ = trial_settings(base, {})
    trial_cfg.validate()
    aligned_weights, aligned_meta = load_module_checkpoint(run.alignment_stage(cfg.method).module_path,
                                                           expect={"stage": "aligned"})
    require_offline_temperature(cfg.method, aligned_meta)

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
        tune.with_parameters(__getattr__("ACATrainable"), base=base, aligned_weights=aligned_weights,
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


def summarize(results, online_steps: int, metric: str = "normalized_score") -> dict:
    """Per-trial final score and dip, and the best config by each."""
    trials = []
    for result in results:
        metrics = result.metrics or {}
        trials.append({
            "trial_id": metrics.get("trial_id") or Path(result.path).name,
            "config": {k: v for k, v in (result.config or {}).items() if k in KNOBS},
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "iterations": metrics.get("training_iteration", 0),
            "env_steps": metrics.get("env_steps", 0),
            "completed": metrics.get("env_steps", 0) >= online_steps,
            "final_score": metrics.get(metric),
            "dip": metrics.get("dip"),
            "score_at_0": metrics.get("score_at_0"),
            "restored_env_steps": metrics.get("restored_env_steps", 0),
            "path": result.path,
        })

    def best(key, pool):
        pool = [t for t in pool if t[key] is not None and not _is_nan(t[key])]
        return max(pool, key=lambda t: (t[key], t["final_score"] or -math.inf)) if pool else None

    completed = [t for t in trials if t["completed"]]
    return {
        "metric": metric,
        "num_trials": len(trials),
        "num_completed": len(completed),
        "num_errors": sum(t["error"] is not None for t in trials),
        "best_by_final_score": best("final_score", completed or trials),
        "best_by_dip": best("dip", completed or trials),
        "trials": trials,
    }


def _is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def summary_table(summary: dict) -> str:
    def fmt(x):
        return "n/a" if x is None or _is_nan(x) else f"{x:.1f}"

    lines = [f"{summary['num_trials']} trials ({summary['num_completed']} ran all {summary['online_steps']} "
             f"env steps, {summary['num_errors']} errors); {summary['metric']}:"]
    lines.append(f"  {'trial':<16} {'steps':>7} {'step 0':>7} {'dip':>7} {'final':>7}  config")
    for t in sorted(summary["trials"], key=lambda t: -(t["final_score"] or -math.inf)):
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["config"].items())
        lines.append(f"  {t['trial_id']:<16} {t['env_steps']:>7} {fmt(t['score_at_0']):>7} {fmt(t['dip']):>7} "
                     f"{fmt(t['final_score']):>7}  {cfg}{'  ERROR' if t['error'] else ''}")
    for label, key in (("best by final score", "best_by_final_score"), ("best by dip", "best_by_dip")):
        t = summary[key]
        if t:
            lines.append(f"{label}: {t['trial_id']} (final {fmt(t['final_score'])}, dip {fmt(t['dip'])}) "
                         f"{json.dumps(t['config'], sort_keys=True)}")
    lines.append(f"experiment: {summary['experiment']}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------

def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    """`rllib-o2o tune`'s own flags (the pipeline's flags are added beside them)."""
    p.add_argument("--from-run", help="start from this run directory's aligned checkpoint (stages 1-2 of "
                   "`rllib-o2o run`); only online-stage flags may be given with it")
    p.add_argument("--num-samples", type=int, default=8, help="number of trials")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--search", choices=["auto", "optuna", "random"], default="auto",
                   help="search algorithm; auto = Optuna when installed, else random")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    p.add_argument("--grace-period", type=int, help="ASHA: iterations before a trial may be stopped")
    p.add_argument("--space", help="YAML/JSON search space: knob -> [choices] | {uniform|loguniform|randint: "
                   "[lo, hi]} | constant; knobs: " + ", ".join(KNOBS))
    p.add_argument("--tune-storage-path", help="where the experiment lives: a (shared) dir or a URI such as "
                   "s3://bucket/prefix (default RUN_DIR/tune, or STORAGE_PATH/<run>/tune with --storage-path)")
    p.add_argument("--name", default="aca-tune", help="experiment name; re-running the same name resumes it")
    p.add_argument("--placement-strategy", choices=["SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK"],
                   default="SPREAD", help="placement of each trial's bundles (learner+driver, EnvRunners)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its checkpoint")


def settings_from_args(args, load_file) -> TuneSettings:
    space = copy.deepcopy(DEFAULT_SPACE)
    if args.space:
        space = load_file(args.space)
    return TuneSettings(name=args.name, storage_path=args.tune_storage_path, num_samples=args.num_samples,
                        max_concurrent_trials=args.max_concurrent, search=args.search, scheduler=args.scheduler,
                        grace_period=args.grace_period, space=space, placement_strategy=args.placement_strategy,
                        max_failures=args.max_failures)


def config_from_args(args, load_file, flags: dict) -> tuple:
    """(PipelineConfig of the aligned run, online overrides) from `rllib-o2o tune` flags.

    `flags`: the pipeline flags given on the command line (rllib_o2o.flags.given_values).
    """
    from rllib_o2o.config import PipelineConfig, config_from_options
    from rllib_o2o.rundir.layout import RunDir

    flags = dict(flags)
    if args.from_run:
        saved = RunDir(args.from_run).config_path
        storage_path = flags.pop("storage_path", None)
        if storage_path and not saved.exists():  # a fresh node: the run is on storage only
            run = RunDir.open(args.from_run, storage_path)
            with run.lock():  # released before run_tune locks it again for the search
                run.sync()
        if not saved.exists():
            raise ValueError(f"{args.from_run}: no config.json, not a run directory of `rllib-o2o run`")
        if args.config:
            raise ValueError("--config cannot be combined with --from-run (the run's config.json is used)")
        cfg = PipelineConfig.from_dict(json.loads(saved.read_text()))
        cfg.out = str(args.from_run)
        cfg.storage_path = storage_path or cfg.storage_path
        flags.pop("out", None)
        fixed = sorted(set(flags) - set(ONLINE_FIELDS))
        if fixed:
            raise ValueError(f"--from-run: {', '.join(fixed)} belong(s) to stages 1-2 of that run; "
                             "drop them, or start a new run with --out")
        return cfg, flags
    cfg = config_from_options({**(load_file(args.config) if args.config else {}), **flags})
    if cfg.dataset is None:
        print("no dataset given: tuning on the embedded default (Pendulum-v1 medium data made here)")
    return cfg, {}
