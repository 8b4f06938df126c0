"""The whole offline-to-online pipeline: stage 1 -> alignment task -> stage 3.

Each stage writes its outputs under the run directory and a DONE.json only
after they are durable, so a re-run skips finished stages and resumes an
interrupted one from its last checkpoint. With `storage_path` the run directory
is mirrored to STORAGE_PATH/<run dir name> (`rllib_o2o.rundir.mirror`), so the re-run
may be on another node. A run holds its directory's lock (`rllib_o2o.rundir.lock`)
from start to end: a second process on the same run is refused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray

from rllib_o2o.checkpoints import (
    load_module_checkpoint,
    load_optimizer_states,
    save_module_checkpoint,
    write_json_atomic,
)
from rllib_o2o.config import EMBEDDED_ENV, PipelineConfig
from rllib_o2o.console import Console, quiet_libraries
from rllib_o2o.data.location import fetch_dataset, is_uri
from rllib_o2o.data.scores import reference_scores
from rllib_o2o.data.shared import SharedDataset
from rllib_o2o.methods import get_method
from rllib_o2o.metrics_log import MetricsLog, require_wandb
from rllib_o2o.presets import get_preset, preset_for_dataset
from rllib_o2o.ray_start import init_ray
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import RUN_CONFIG_FILE
from rllib_o2o.rundir.stage import StageDir

# One run directory holds the shared offline and alignment stages and one online stage per
# method, so these keys may differ between invocations on the same directory.
PER_METHOD_KEYS = ("method",)
# Where the run lives, not what it computes: a run resumed from storage on another node may
# have another local path (the storage location is STORAGE_PATH/<run dir name>).
LOCATION_KEYS = ("out", "storage_path")
# How fast the run computes or how it is watched, not what it computes: a run resumed on a node
# with other cores may choose other torch threads, and any run may be resumed verbose, into W&B or
# with other callbacks watching it.
EXECUTION_KEYS = ("torch_threads", "verbose", "wandb_project", "online_callbacks")


def embedded_default_dataset(out: Path, torch_threads: int | str = "auto") -> Path:
    from rllib_o2o.stages.collect import CollectSettings, collect

    settings = CollectSettings(env_id=EMBEDDED_ENV, kinds=("medium",), num_transitions=5_000,
                               train_env_steps=8_000, env_steps_per_iteration=500, random_warmup_steps=500,
                               medium_target_score=40.0)
    return collect(settings, out, torch_threads=torch_threads)["medium"]


def resolve_dataset(cfg: PipelineConfig, run: RunDir) -> Path:
    """A dataset directory for `cfg.dataset`: as is, or imported from D4RL HDF5 / Minari."""
    if cfg.dataset is None:
        return embedded_default_dataset(run.datasets_path, cfg.torch_threads)
    from rllib_o2o.data.sources import D4RL, DIRECTORY, dataset_kind

    if is_uri(cfg.dataset):
        return fetch_dataset(cfg.dataset, run.fetched_dataset_path)
    target = run.imported_dataset_path
    if (target / "dataset.json").exists():
        return target
    kind = dataset_kind(cfg.dataset)  # as the preflight decided
    if kind == DIRECTORY:
        return Path(cfg.dataset)
    if kind == D4RL:
        from rllib_o2o.data.d4rl import import_d4rl

        if not cfg.env:
            raise ValueError("--env is required to import a D4RL file")
        return import_d4rl(cfg.dataset, env_id=cfg.env, out_dir=target)
    from rllib_o2o.data.minari_import import import_minari

    return import_minari(cfg.dataset, out_dir=target, env_id=cfg.env)


def open_run(cfg: PipelineConfig) -> RunDir:
    """The run directory `cfg` describes, after validating `cfg`, mirrored when it has a storage path.

    Nothing is written; take `run.lock()` before `prepare`."""
    cfg.validate()
    return RunDir.open(cfg.out, cfg.storage_path)


def prepare(cfg: PipelineConfig, run: RunDir, validated=None):
    """Validation before any training (dataset vs env, output path), then the sync with storage.

    `run`: `open_run(cfg)`, locked by the caller. Returns (dataset_dir, meta, stats): the
    dataset's statistics come from its validation, `validated` (the preflight's DatasetStats)
    when that was of the same directory."""
    from rllib_o2o.data.rollouts import check_registered
    from rllib_o2o.data.validate import validate_dataset

    run.path.mkdir(parents=True, exist_ok=True)
    dataset_dir = resolve_dataset(cfg, run)
    from rllib_o2o.data.schema import read_meta

    meta = read_meta(dataset_dir)
    cfg.env = cfg.env or meta.env_id
    check_registered(cfg.env)
    if validated is not None and Path(validated.path).resolve() == Path(dataset_dir).resolve():
        stats = validated  # the preflight read and checked this directory already
    else:
        stats = validate_dataset(dataset_dir, env_id=cfg.env)
    if cfg.ref_min_score is None:
        refs = (meta.ref_min_score, meta.ref_max_score)
        cfg.ref_min_score, cfg.ref_max_score = refs if None not in refs else (reference_scores(cfg.env) or refs)
    cfg.preset = cfg.preset or preset_for_dataset(Path(cfg.dataset).name if cfg.dataset else dataset_dir.name)
    saved = run.config_path
    if saved.exists():
        _refuse_other_run(json.loads(saved.read_text()), cfg, str(run.path))
    if run.mirror is not None:
        _refuse_other_run(run.stored_json(RUN_CONFIG_FILE), cfg, run.mirror.uri)
    if not saved.exists():
        write_json_atomic(saved, asdict(cfg))
    run.sync()  # with storage: what the run dir lacks comes down, what storage lacks goes up
    return dataset_dir, meta, stats


def _refuse_other_run(previous: dict | None, cfg: PipelineConfig, where: str) -> None:
    """A run directory (or its storage) holding another run is never mixed with this one."""
    ignored = PER_METHOD_KEYS + LOCATION_KEYS + EXECUTION_KEYS
    changed = sorted(k for k in previous or {} if k not in ignored and previous.get(k) != asdict(cfg).get(k))
    if changed:
        raise ValueError(f"{where} holds a run with a different config ({', '.join(changed)} differ); "
                         "use another --out to start a new run")


def run_offline_and_alignment(cfg: PipelineConfig, run: RunDir, dataset: SharedDataset, meta, console: Console,
                              metrics: MetricsLog) -> tuple[dict | None, dict | None]:
    """The method's offline stage and, if it starts from the aligned critic, the alignment Ray task.

    Each is skipped when already complete in `run` (methods share them). The offline stage
    reads `dataset.path` through RLlib's offline API (Ray Data); the alignment task, the shared copy.
    """
    from rllib_o2o.metrics_log import HELDOUT_RESIDUAL, Z_LOSS
    from rllib_o2o.stages.alignment import AlignSettings, align_in_task
    from rllib_o2o.stages.offline import run_offline_stage

    method = get_method(cfg.method)
    offline_stage = run.offline_stage(cfg.method)
    if offline_stage is None:
        offline = None
    elif cfg.offline_checkpoint and method.offline == "sacml":
        offline = import_offline_stage(cfg, meta, offline_stage, console)
    else:
        offline = run_offline_stage(cfg, Path(dataset.path), meta, offline_stage, console, metrics, method)
    if method.start != "aligned":
        return offline, None

    align_stage = run.alignment_stage(cfg.method)
    alignment = align_stage.done()
    if alignment is None:
        offline_weights, offline_meta = load_module_checkpoint(offline_stage.module_path,
                                                               expect={"stage": "offline"})
        actor = {k[len("actor."):]: v for k, v in offline_weights.items() if k.startswith("actor.")}
        alpha_off = offline_temperature = cfg.alpha_off if cfg.alpha_off is not None else offline_meta["alpha_off"]
        if method.z_temperature == "online":
            alpha_off = method.online_update_class().start_temperature
        settings = AlignSettings(z_steps=cfg.align_steps, batch_size=cfg.batch_size, lr=cfg.align_lr,
                                 alpha_off=alpha_off, seed=cfg.seed,
                                 z_includes_log_pi0=method.critic_includes_reference,
                                 plateau_patience=cfg.align_plateau_patience,
                                 device="cuda" if cfg.align_num_gpus else "cpu",
                                 actor_activation=offline_meta.get("actor_activation", "relu"),
                                 num_cpus=cfg.align_num_cpus, torch_threads=cfg.torch_threads,
                                 num_members=method.num_critics)
        critic = None
        if method.distill_baseline:
            critic = {k[len("critic."):]: v for k, v in offline_weights.items() if k.startswith("critic.")}
            if not critic:
                raise ValueError(f"method {cfg.method!r} distils Z from the offline critic, but "
                                 f"{offline_stage.module_path} holds an actor only (an imported policy?); "
                                 f"use --method aca, which fits Z by TD on the data")
        verb = "distilling Z from the offline critic" if critic else "fitting Z"
        console.line(f"alignment: {verb} for at most {cfg.align_steps} steps in a Ray task")
        data = dataset.refs()  # through the object store: any node can run the task
        with (console.progress("alignment", cfg.align_steps, "Z steps") as bar,
              metrics.stage(align_stage.path, None) as log):  # no checkpoints: a re-run fits Z from the start

            def on_point(point: dict) -> None:
                log.log(point["step"], {Z_LOSS: point["z_loss"], HELDOUT_RESIDUAL: point["heldout_residual"]})
                distilled = point.get("heldout_distill_error")
                prefix = "" if distilled is None else f"held-out distillation error {distilled:.4f}, "
                bar.update(point["step"], f"{prefix}z_loss {point['z_loss']:.4f}, held-out Bellman residual "
                                          f"{point['heldout_residual']:.4f}")

            bar.start(0)
            report = align_in_task(actor, data, tuple(cfg.hidden), settings, cfg.align_num_gpus, on_point,
                                   offline_critic=critic)
        save_module_checkpoint(align_stage.module_path, report.pop("weights"), {
            "stage": "aligned", "algorithm": "O2OSAC/aca", "env_id": cfg.env,
            "obs_dim": meta.obs_dim, "act_dim": meta.act_dim, "hidden": list(cfg.hidden),
            "actor_activation": settings.actor_activation, "offline_temperature": offline_temperature})
        alignment = align_stage.mark_done(report)
        curve = report["z_loss_curve"]
        plateau = ", stopped at the plateau" if report["stopped_at_plateau"] else ""
        console.saved("alignment", align_stage.module_path,
                      f"{report['z_steps_done']} Z steps in {report['seconds']:.1f}s{plateau}, z_loss "
                      f"{curve[0]['z_loss']:.3f} -> {curve[-1]['z_loss']:.3f}, max |R(s,a) - Z(s)| = "
                      f"{report['surgery_max_abs_error']:.2g}")
    else:
        console.line("alignment: already complete, skipped")
    return offline, alignment


def run_pipeline(cfg: PipelineConfig, validated=None) -> dict:
    """Runs or resumes the run `cfg` describes in `cfg.out`; returns the results, also written to results.json.

    Stages already done in the run directory are skipped, an interrupted one resumes
    from its last checkpoint. `cfg` is completed in place (env, preset and reference
    scores from the dataset). This is the pipeline alone: `rllib_o2o.run` first makes
    the checks of `rllib-o2o run` (nothing is written before they pass) and starts Ray,
    which generating the embedded default dataset already needs. `validated`: the checks'
    DatasetStats of the dataset directory, so that it is not read again to validate it.

    Results: env_id, dataset, preset, method, seed, reference_scores; offline and
    alignment (their reports, None for a method without that stage), online (curve of
    evaluations, dip, final score); offline_score (online step 0), dip, final_score
    (normalised scores, None without reference scores), dataset_score (the data's mean
    episode, normalised) and seconds_this_invocation.
    """
    require_wandb(cfg.wandb_project)  # before anything trains (the embedded dataset's generation included)
    quiet_libraries(cfg.verbose)
    console = Console()
    start = time.perf_counter()
    run = open_run(cfg)
    with run.lock():
        return _run_pipeline(cfg, run, console, start, validated)


def _run_pipeline(cfg: PipelineConfig, run: RunDir, console: Console, start: float, validated) -> dict:
    """`run_pipeline` in its run directory, locked."""
    from rllib_o2o.stages.online import require_offline_temperature, run_online_stage, seeds_replay

    run_dir = run.path
    dataset_dir, meta, stats = prepare(cfg, run, validated)
    preset = get_preset(cfg.preset, clip_beta=cfg.clip_beta, w_schedule=cfg.w_schedule,
                        seed_episodes=cfg.seed_episodes, entropy_scale=cfg.entropy_scale)
    console.line(f"run {run_dir}: env {cfg.env}, dataset {dataset_dir}, preset {cfg.preset} {preset}")
    owns_ray = init_ray(quiet=not cfg.verbose)
    metrics = MetricsLog(cfg.wandb_project, run_name=f"{run_dir.resolve().name}-{cfg.method}",
                         run_id=wandb_run_id(cfg), run_dir=run_dir, config=asdict(cfg))
    dataset = SharedDataset(dataset_dir)  # read once, by the first stage that needs it
    try:
        offline, alignment = run_offline_and_alignment(cfg, run, dataset, meta, console, metrics)
        if not seeds_replay(cfg.method, preset):
            dataset.release()  # no later reader: the object store's copy goes now
        start_weights, start_meta = online_start_weights(cfg, run)
        require_offline_temperature(cfg.method, start_meta)
        online = run_online_stage(cfg, preset, start_weights, dataset, meta, run.online_stage(cfg.method),
                                  console, metrics, actor_activation=start_meta.get("actor_activation", "relu"),
                                  optimizer_states=online_optimizer_states(cfg, run),
                                  offline_temperature=start_meta.get("offline_temperature"))
    finally:
        dataset.release()
        metrics.close()
        if owns_ray:
            ray.shutdown()
    results = {
        "env_id": cfg.env,
        "dataset": str(dataset_dir),
        "preset": cfg.preset,
        "method": cfg.method,
        "seed": cfg.seed,
        "reference_scores": [cfg.ref_min_score, cfg.ref_max_score],
        # the behaviour data's mean episode, normalised: what the offline policy is read against
        "dataset_score": cfg.score(stats.return_mean),
        "offline": offline and {k: offline[k] for k in ("score", "return", "updates", "seconds", "curve")},
        "alignment": alignment and {k: alignment[k] for k in ("z_loss_curve", "surgery_max_abs_error", "seconds",
                                                               "z_steps_per_s")},
        "online": online,
        "offline_score": online["curve"][0]["score"],
        "dip": online["dip"],
        "final_score": online["final_score"],
        "seconds_this_invocation": time.perf_counter() - start,
    }
    write_json_atomic(run.results_path(cfg.method), results)
    run.push_file(run.results_path(cfg.method))
    return results


def wandb_run_id(cfg: PipelineConfig) -> str:
    """One W&B run per run directory and method, the same on every invocation and node (a resumed
    run appends to it): a digest of the run dir's name and what the run computes."""
    import hashlib

    identity = {k: v for k, v in asdict(cfg).items() if k not in LOCATION_KEYS + EXECUTION_KEYS}
    text = json.dumps([Path(cfg.out).resolve().name, identity], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def online_start_weights(cfg: PipelineConfig, run: RunDir) -> tuple[dict | None, dict]:
    """The module state the online stage starts from (None: random init) and its checkpoint's meta
    (the actor's activation; for an aligned module also the offline temperature)."""
    method = get_method(cfg.method)
    if method.start == "scratch":
        return None, {}
    if method.start == "aligned":
        return load_module_checkpoint(run.alignment_stage(cfg.method).module_path, expect={"stage": "aligned"})
    weights, meta = load_module_checkpoint(run.offline_stage(cfg.method).module_path, expect={"stage": "offline"})
    missing = {"critic", "target_critic", "log_alpha"} - {k.split(".")[0] for k in weights}
    if missing:
        raise ValueError(f"method {cfg.method!r} transfers the offline critic, but the offline checkpoint "
                         f"({meta.get('algorithm')}) has no {sorted(missing)}")
    weights = dict(weights)
    weights["num_updates"] = weights["num_updates"] * 0  # online update count starts at 0
    start_temperature = method.online_update_class().start_temperature  # ACA's: 1, whatever its critic
    if start_temperature is not None:
        weights["log_alpha"] = np.full_like(weights["log_alpha"], math.log(start_temperature))
    return weights, meta


def online_optimizer_states(cfg: PipelineConfig, run: RunDir) -> dict | None:
    """The offline learner's Adam states when `carry_optimizer_state` (else None: fresh Adam)."""
    stage = run.offline_stage(cfg.method)
    if not get_method(cfg.method).carry_optimizer_state or stage is None:
        return None
    states = load_optimizer_states(stage.module_path)
    if states is None:
        raise ValueError(f"method {cfg.method!r} carries the offline optimizer state, but {stage.module_path} "
                         "holds none (an imported policy, or an offline stage from before it was saved)")
    return states


def import_offline_stage(cfg: PipelineConfig, meta, stage: StageDir, console: Console) -> dict:
    """Stage 1 replaced by an existing offline checkpoint (RLlib CQL/SAC or this project's)."""
    from rllib_o2o.data.rollouts import evaluate_policy
    from rllib_o2o.policy import ActorPolicy
    from rllib_o2o.policy_import import load_reference_actor

    done = stage.done()
    if done:
        return done
    ref = load_reference_actor(cfg.offline_checkpoint, meta.obs_dim, meta.act_dim)
    if list(ref.hidden) != list(cfg.hidden):
        raise ValueError(f"{cfg.offline_checkpoint}: its policy has hidden sizes {ref.hidden}, the run uses "
                         f"{list(cfg.hidden)}; set hidden: {ref.hidden} in --config")
    if ref.alpha_off is None and cfg.alpha_off is None:
        console.line("offline checkpoint carries no temperature: alignment uses alpha_off = 0 (set alpha_off to "
                     "change)")
    alpha_off = ref.alpha_off if ref.alpha_off is not None else 0.0
    actor, kind = ref.state, ref.kind
    policy = ActorPolicy(actor, meta.obs_dim, meta.act_dim, ref.hidden, meta.action_low, meta.action_high,
                         activation=ref.activation)
    returns = evaluate_policy(cfg.env, policy, cfg.eval_episodes, cfg.seed + 10_000, cfg.max_episode_steps)
    weights = {f"actor.{k}": v for k, v in actor.items()}
    save_module_checkpoint(stage.module_path, weights, {
        "stage": "offline", "algorithm": f"imported:{kind}", "env_id": cfg.env, "obs_dim": meta.obs_dim,
        "act_dim": meta.act_dim, "hidden": list(ref.hidden), "alpha_off": alpha_off,
        "actor_activation": ref.activation, "source": str(cfg.offline_checkpoint)})
    ret = float(returns.mean())
    summary = stage.mark_done({"return": ret, "score": cfg.score(ret), "curve": [], "updates": 0,
                                    "seconds": 0.0, "alpha_off": alpha_off, "source": str(cfg.offline_checkpoint)})
    console.saved("offline", stage.module_path, f"{kind} policy imported from {cfg.offline_checkpoint}, "
                  f"return {ret:.1f}")
    return summary


def score_table(results: dict) -> str:
    def fmt(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"

    rows = [
        ("dataset (mean episode)", results.get("dataset_score")),
        ("offline policy (online step 0)", results["offline_score"]),
        ("dip (lowest in first 10% of online steps)", results["dip"]),
        ("final (after online fine-tuning)", results["final_score"]),
    ]
    width = max(len(r[0]) for r in rows)
    method = results.get("method", "aca")
    lines = [f"{results['env_id']} / {Path(results['dataset']).name} / {method} (normalised score)"]
    lines += [f"  {name:<{width}}  {fmt(value):>7}" for name, value in rows]
    seconds = {stage: results[stage]["seconds"] for stage in ("offline", "alignment", "online") if results[stage]}
    lines.append("  wall time: " + ", ".join(f"{stage} {fmt(sec)}s" for stage, sec in seconds.items()))
    return "\n".join(lines)
