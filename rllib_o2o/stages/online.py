"""Stage 3: online fine-tuning on RLlib EnvRunners: ACA (SAC with the aligned critic) or a baseline."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from rllib_o2o.checkpoints import load_module_checkpoint, load_optimizer_states
from rllib_o2o.console import Console
from rllib_o2o.data.schema import DatasetMeta, top_k_episodes
from rllib_o2o.data.shared import SharedDataset
from rllib_o2o.metrics import (
    ALPHA,
    CRITIC_ACTION_WEIGHT_NORM,
    DENSITY_RATIO_OFFLINE,
    DENSITY_RATIO_ONLINE,
    KL_TO_REFERENCE,
    MEAN_ACTION_SHIFT,
    ONLINE_DIAGNOSTICS,
    Q_MEAN,
    REFERENCE_WEIGHT,
    TD_ERROR_RMS,
)
from rllib_o2o.metrics_log import EVAL_RETURN, EVAL_SCORE, MetricsLog, learner_scalars
from rllib_o2o.methods import Variants, get_method
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import RESUMED_FROM, alignment_stage_name
from rllib_o2o.rundir.stage import StageDir
from rllib_o2o.stages.common import StageIO, evaluation_return, format_eval, train_loop


def online_config(cfg, preset, actor_activation: str = "relu", offline_rows: int = 0, log_dir: Path | None = None,
                  offline_temperature: float | None = None):
    """`offline_rows`: size of the offline dataset, kept in the buffer beside
    `cfg.replay_capacity` online rows by methods that replay it (Balanced Replay).
    `log_dir`: the algorithm's log directory (the stage directory).
    `offline_temperature`: alpha_off of the critic the aligned Z was distilled from (its checkpoint's
    meta), the entropy bonus of methods that keep it (`require_offline_temperature` checks it is there)."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
    from rllib_o2o.algorithms.o2o_sac.evaluation import batched_evaluation
    method = cfg.resolved_method()
    update = method.online_update_class()
    capacity = cfg.replay_capacity + (offline_rows if update.replays_offline_data() else 0)
    utd = method.updates_per_env_step if cfg.utd is None else cfg.utd
    warmup = online_warmup_steps(cfg, method)
    w0, horizon, w_min = preset.w_schedule
    config = (
        O2OSACConfig()
        .environment(cfg.env, env_config=cfg.env_config())
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=cfg.num_envs_per_env_runner,
                     rollout_fragment_length=fragment_per_env(cfg.rollout_fragment_length,
                                                              cfg.num_envs_per_env_runner),
                     custom_resources_per_env_runner=cfg.custom_resources_per_env_runner or {})
        .o2o(update=update, clip_beta=preset.clip_beta, use_log_prob_clip=method.use_log_prob_clip,
             critic_includes_reference=method.critic_includes_reference,
             path_only_log_prob=method.path_only_log_prob, reference_entropy_target=method.reference_entropy_target,
             actor_warmup_updates=method.actor_warmup_updates,
             num_critics=method.num_critics,
             offline_entropy_bonus=(offline_temperature or 0.0) if method.keep_offline_entropy_bonus else 0.0,
             critic_target_members=method.critic_target_members, actor_q_reduction=method.actor_q_reduction,
             w_schedule=(w0, horizon, w0) if method.fixed_w else preset.w_schedule,
             entropy_scale=preset.entropy_scale,
             actor_grad_clip=update.actor_grad_clip,
             critic_layer_norm=method.critic_layer_norm,
             policy_update_interval=utd if method.one_actor_step_per_env_step else 1,
             warmup_env_steps=warmup, random_warmup_steps=warmup if method.warmup_random_actions else 0,
             env_steps_per_iteration=cfg.eval_every, max_env_steps=cfg.online_steps, updates_per_env_step=float(utd),
             replay_capacity=capacity,
             hidden=tuple(cfg.hidden), actor_activation=actor_activation, torch_threads=cfg.torch_threads,
             log_dir=None if log_dir is None else str(Path(log_dir).resolve()))
        .training(train_batch_size_per_learner=cfg.batch_size, initial_alpha=1.0)
        .learners(num_learners=0, num_gpus_per_learner=cfg.num_gpus_per_learner)
        .evaluation(evaluation_interval=1, evaluation_duration=cfg.eval_episodes,
                    evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                    evaluation_config={"explore": False}, custom_evaluation_function=batched_evaluation)
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=cfg.seed)
    )
    if cfg.online_callbacks:
        config = config.callbacks(callbacks_class=import_class(cfg.online_callbacks))
    return config


def online_warmup_steps(cfg, method) -> int:
    """Env steps before the first online update: the method's warm-up, or `cfg.online_warmup_steps` for a
    method that has one (a method without a warm-up keeps none)."""
    if method.warmup_env_steps == 0 or cfg.online_warmup_steps is None:
        return method.warmup_env_steps
    return cfg.online_warmup_steps


def import_class(path: str) -> type:
    """The class at `module:Class`, or a ValueError naming what could not be imported."""
    import importlib

    module_name, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"online_callbacks {path!r}: cannot import it ({type(err).__name__}: {err})") from None


def require_offline_temperature(method_name: str, aligned_meta: dict, variants: Variants | None = None) -> None:
    """A method that keeps the offline entropy bonus cannot start from an aligned checkpoint that does not
    record the offline temperature (aligned before it was recorded): refused, not run without the bonus."""
    if get_method(method_name, variants).keep_offline_entropy_bonus and aligned_meta.get("offline_temperature") is None:
        raise ValueError(f"method {method_name!r} keeps the offline critic's entropy bonus, but its aligned checkpoint "
                         "records no offline_temperature (aligned by an older version): remove the run's "
                         f"{alignment_stage_name(method_name, variants)}/ directory to align again")


def fragment_per_env(fragment: int, num_envs: int) -> int:
    """RLlib's per-env fragment for `fragment` env steps per sample call of an EnvRunner.

    RLlib steps an EnvRunner's vectorised envs in lockstep, `rollout_fragment_length`
    steps each, so a call takes that times `num_envs`. The run's option counts the
    call's env steps (how far the acting policy lags the learner), whatever the number
    of envs: 50 with 5 envs is 10 steps each; a fragment that does not divide rounds up.
    """
    return max(1, -(-fragment // num_envs))


def seed_episodes(method, preset) -> int:
    """The offline episodes a fresh online stage puts in its replay buffer (the preset's, unless
    the method fixes them); a method that replays the offline data (Balanced Replay, RLPD) puts the
    whole dataset there instead."""
    return preset.seed_episodes if method.seed_episodes is None else method.seed_episodes


def seeds_replay(method_name: str, preset, variants: Variants | None = None) -> bool:
    """Whether a fresh online stage of `method_name` reads the offline dataset (into its replay buffer)."""
    method = get_method(method_name, variants)
    return method.online_update_class().replays_offline_data() or seed_episodes(method, preset) > 0


class OnlineFineTuning:
    """Stage 3: the method's online update from its start module (aligned, offline or random) for
    `online_steps` env steps on the EnvRunners; resumable. Output: DONE.json (the curve of evaluations
    with the learner's diagnostics, dip, final score)."""

    role = "online"

    def stage_dir(self, ctx) -> StageDir:
        return ctx.run.online_stage(ctx.config.method)

    def run(self, ctx, io: StageIO) -> dict:
        cfg, run = ctx.config, ctx.run
        if not seeds_replay(cfg.method, ctx.preset, cfg.variants):
            io.dataset.release()  # no later reader: the object store's copy goes now
        start_weights, start_meta = start_module(cfg.method, run, cfg.variants)
        require_offline_temperature(cfg.method, start_meta, cfg.variants)
        return run_online_stage(cfg, ctx.preset, start_weights, io.dataset, ctx.meta, self.stage_dir(ctx),
                                io.console, io.metrics, actor_activation=start_meta.get("actor_activation", "relu"),
                                optimizer_states=offline_optimizer_states(cfg.method, run, cfg.variants),
                                offline_temperature=start_meta.get("offline_temperature"))


def start_module(method_name: str, run: RunDir, variants: Variants | None = None) -> tuple[dict | None, dict]:
    """The module state the online stage starts from (None: random init) and its checkpoint's meta
    (the actor's activation; for an aligned module also the offline temperature). `variants`: the run's
    named variants, when `method_name` may be one."""
    method = get_method(method_name, variants)
    if method.start == "scratch":
        return None, {}
    if method.start == "aligned":
        return load_module_checkpoint(run.alignment_stage(method_name, variants).module_path,
                                      expect={"stage": "aligned"})
    weights, meta = load_module_checkpoint(run.offline_stage(method_name, variants).module_path,
                                           expect={"stage": "offline"})
    missing = {"critic", "target_critic", "log_alpha"} - {k.split(".")[0] for k in weights}
    if missing:
        raise ValueError(f"method {method_name!r} transfers the offline critic, but the offline checkpoint "
                         f"({meta.get('algorithm')}) has no {sorted(missing)}")
    weights = dict(weights)
    weights["num_updates"] = weights["num_updates"] * 0  # online update count starts at 0
    start_temperature = method.online_update_class().start_temperature  # ACA's: 1, whatever its critic
    if start_temperature is not None:
        weights["log_alpha"] = np.full_like(weights["log_alpha"], math.log(start_temperature))
    return weights, meta


def offline_optimizer_states(method_name: str, run: RunDir, variants: Variants | None = None) -> dict | None:
    """The offline learner's Adam states when `carry_optimizer_state` (else None: fresh Adam)."""
    stage = run.offline_stage(method_name, variants)
    if not get_method(method_name, variants).carry_optimizer_state or stage is None:
        return None
    states = load_optimizer_states(stage.module_path)
    if states is None:
        raise ValueError(f"method {method_name!r} carries the offline optimizer state, but {stage.module_path} "
                         "holds none (an imported policy, or an offline stage from before it was saved)")
    return states


def run_online_stage(cfg, preset, start_weights: dict | None, dataset: SharedDataset, meta: DatasetMeta,
                     stage: StageDir, console: Console, metrics: MetricsLog, actor_activation: str = "relu",
                     optimizer_states: dict | None = None, offline_temperature: float | None = None) -> dict:
    """Fine-tunes from `start_weights` (None: random init) for `cfg.online_steps` env steps; resumable.

    `dataset`: read only to seed the replay buffer (`seeds_replay`).
    `optimizer_states`: the offline learner's Adam states, loaded by parameter position
    (the reference code's behaviour) instead of starting Adam afresh.
    """
    method = cfg.resolved_method()
    num_seed_episodes = seed_episodes(method, preset)
    done = stage.done()
    if done:
        console.line(f"online stage: already complete ({format_eval(done['final_return'], done['final_score'])}), "
                     "skipped")
        return done
    start = time.perf_counter()
    with console.progress("online", cfg.online_steps, "env steps") as bar:
        algo = online_config(cfg, preset, actor_activation, offline_rows=meta.num_transitions,
                             log_dir=stage.path, offline_temperature=offline_temperature).build_algo()
        try:
            progress = stage.restore_checkpoint(algo)
            if progress:
                progress[RESUMED_FROM] = [*progress.get(RESUMED_FROM, []), progress["env_steps"]]
                console.line(f"online stage: resumed at {algo.env_steps_sampled} env steps")
            bar.start(progress["env_steps"] if progress else 0)
            with metrics.stage(stage.path, None if progress is None else progress["env_steps"]) as log:

                def evaluated(point: dict, learner: dict) -> None:
                    """Keeps the learner's diagnostics in a new point of the curve, logs both."""
                    point.update({k: float(learner[k]) for k in ONLINE_DIAGNOSTICS if k in learner})
                    log.log(point["env_steps"], {EVAL_RETURN: point["return"], EVAL_SCORE: point["score"],
                                                 **learner_scalars(learner)})

                if not progress:
                    progress = {"iteration": 0, "curve": [], "env_steps": 0}
                    seed_rows = None
                    if seeds_replay(cfg.method, preset, cfg.variants):
                        k = None if method.online_update_class().replays_offline_data() else num_seed_episodes
                        seed_rows = dataset.arrays() if k is None else top_k_episodes(dataset.arrays(), k)
                    start_online(algo, method, start_weights, optimizer_states=optimizer_states,
                                 seed_rows=seed_rows, action_bounds=(np.asarray(meta.action_low, np.float32),
                                                                     np.asarray(meta.action_high, np.float32)))
                    if seed_rows is not None:
                        what = "the offline dataset" if k is None else f"the {k} highest-return offline episodes"
                        console.line(f"online stage: seeded the replay buffer with {what} "
                                     f"({len(seed_rows['rewards'])} transitions)")
                    ret = evaluation_return(algo.evaluate())
                    progress["curve"].append({"env_steps": 0, "return": ret, "score": cfg.score(ret)})
                    evaluated(progress["curve"][-1], {})
                    bar.update(0, f"{format_eval(ret, cfg.score(ret))} ({cfg.method}, {method.start} start)")

                def record(progress: dict, result: dict) -> str:
                    ret = evaluation_return(result)
                    steps = algo.env_steps_sampled
                    progress["env_steps"] = steps
                    progress["curve"].append({"env_steps": steps, "return": ret, "score": cfg.score(ret)})
                    learner = result.get("learners", {}).get("default_policy", {})
                    evaluated(progress["curve"][-1], learner)
                    stats = (f" alpha {learner[ALPHA]:.3f} q_mean {learner[Q_MEAN]:.2f} td_rms "
                             f"{learner[TD_ERROR_RMS]:.2f} KL(pi||pi0) {learner[KL_TO_REFERENCE]:.2f} "
                             f"|a-a0| {learner[MEAN_ACTION_SHIFT]:.3f} |W_a| "
                             f"{learner[CRITIC_ACTION_WEIGHT_NORM]:.2f}"
                             if ALPHA in learner else " (no updates yet)")
                    if REFERENCE_WEIGHT in learner:
                        stats = f" w {learner[REFERENCE_WEIGHT]:.3f}" + stats
                    if DENSITY_RATIO_ONLINE in learner:  # balanced replay: how well w separates the two
                        stats += (f" density ratio online {learner[DENSITY_RATIO_ONLINE]:.2f} "
                                  f"offline {learner[DENSITY_RATIO_OFFLINE]:.2f}")
                    return format_eval(ret, cfg.score(ret)) + stats

                progress = train_loop(algo, stage, progress, lambda p: p["env_steps"] >= cfg.online_steps,
                                      record, cfg.checkpoint_every, bar, lambda p: p["env_steps"])
        finally:
            algo.stop()
    curve = progress["curve"]
    summary = stage.mark_done({
        "curve": curve,
        "dip": dip(curve, cfg.online_steps),
        "final_score": curve[-1]["score"],
        "final_return": curve[-1]["return"],
        "env_steps": progress["env_steps"],
        RESUMED_FROM: progress.get(RESUMED_FROM, []),
        "seconds": time.perf_counter() - start,
    })
    dip_score = "" if summary["dip"] is None else f", dip {summary['dip']:.1f}"
    final = format_eval(summary["final_return"], summary["final_score"])
    console.saved("online", stage.path, f"{cfg.method}, final {final}{dip_score}, {summary['seconds']:.0f}s")
    return summary


def start_online(algo, method, start_weights: dict | None, *, optimizer_states: dict | None = None,
                 seed_rows: dict | None = None, action_bounds: tuple | None = None) -> None:
    """A fresh online stage: the start module (aligned, offline or random), its reference policy, Adam,
    the EnvRunners' weights and the protected offline rows `seed_rows` (in env units, `action_bounds`
    (low, high) arrays) in the replay buffer. The pipeline's online stage and each Tune trial start so."""
    if start_weights is not None:
        if method.fresh_critic:  # ablation: keep this algorithm's random R, not the aligned one
            initial = algo.call_learner(lambda learner: learner.get_module_weights())
            start_weights = {k: initial[k] if k.split(".")[0] in ("critic", "target_critic") else v
                             for k, v in start_weights.items()}
        algo.call_learner(lambda learner: learner.set_module_weights(start_weights))
    if method.start != "aligned":  # KL(pi || pi0) is then measured against the start policy
        algo.call_learner(lambda learner: learner.module["default_policy"].unwrapped()
                          .freeze_reference_policy())
    if optimizer_states is not None:
        algo.call_learner(lambda learner: learner.set_optimizer_states(optimizer_states))
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    if seed_rows is not None:
        algo.replay.add_transitions(seed_rows, *action_bounds, protected=True)


def dip(curve: list[dict], online_steps: int) -> float | None:
    """Lowest normalised score among evaluations in the first 10% of online steps (step 0 included)."""
    early = [p["score"] for p in curve if p["env_steps"] <= 0.1 * online_steps and p["score"] is not None]
    if len(early) < 2 and len(curve) > 1:  # evaluations sparser than 10%: take the first after step 0
        early = [p["score"] for p in curve[:2] if p["score"] is not None]
    return min(early) if early else None
