"""Stage 1: offline pre-training from the Parquet dataset (RLlib offline API).

The method's offline kind (`methods.OFFLINE_KINDS`): SAC+ML (the paper's), IQL, or SAC with
CQL's penalty (cql-sac). The stage hands over a moving average of the actor's weights
(`offline_actor_ema`, by default over 4% of the stage) rather than wherever the last update
happens to land; optionally the actor's learning rate also decays to zero over the stage
(`offline_actor_lr_decay`) and the temperature stays above a floor (`offline_min_alpha`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from rllib_o2o.checkpoints import save_module_checkpoint
from rllib_o2o.console import Console
from rllib_o2o.data.schema import DatasetMeta, read_episode_returns
from rllib_o2o.maths import return_range_scale
from rllib_o2o.methods import OFFLINE_KINDS, OfflineKind
from rllib_o2o.metrics import ALPHA, CRITIC_LOSS, Q_MEAN
from rllib_o2o.metrics_log import EVAL_RETURN, EVAL_SCORE, MetricsLog, learner_scalars
from rllib_o2o.data.location import ray_data_path, ray_data_read_args
from rllib_o2o.rundir.names import RESUMED_FROM
from rllib_o2o.rundir.stage import StageDir
from rllib_o2o.stages.common import StageIO, evaluation_return, format_eval, train_loop

# Keys of an offline evaluation point beside "updates", "return" and "score" (the policy handed over):
ACTOR_SCORE = "actor_score"  # the raw actor's score, when the stage hands over its moving average
ACTOR_RETURN = "actor_return"
# The critic's value of the handed-over policy's mean action on VALUE_STATES of the data's states
# (`maths.average_value_estimate`), and of the raw actor's beside a moving average: an offline criterion.
VALUE_ESTIMATE = "value_estimate"
ACTOR_VALUE_ESTIMATE = "actor_value_estimate"
VALUE_STATES = 1000


def offline_config(cfg, dataset_dir: Path, meta: DatasetMeta, kind: OfflineKind | None = None,
                   log_dir: Path | None = None):
    """Stage 1's O2OSAC config: `kind`'s update and critic ensemble (None: SAC+ML with twin critics) on the
    dataset through RLlib's offline API, with the run's settling of the last policy."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
    from rllib_o2o.algorithms.o2o_sac.evaluation import batched_evaluation

    kind = kind or OFFLINE_KINDS["sacml"]
    update = kind.update_class()
    # IQL's advantages in units of 1000 / (the data's return range): its temperature's D4RL scale.
    advantage_scale = return_range_scale(read_episode_returns(dataset_dir)) if update.uses_state_value else 1.0
    return (
        O2OSACConfig()
        .environment(cfg.env, env_config=cfg.env_config())
        .offline_data(input_=[ray_data_path(dataset_dir)], input_read_method_kwargs=ray_data_read_args(dataset_dir))
        .o2o(update=update, alpha_bc=cfg.alpha_bc, updates_per_iteration=cfg.offline_eval_every,
             iql_advantage_scale=advantage_scale, actor_ema=cfg.actor_ema_rate(),
             actor_lr_decay_updates=cfg.offline_steps if cfg.offline_actor_lr_decay else None,
             min_alpha=cfg.offline_min_alpha,
             num_critics=kind.num_critics, critic_target_members=kind.critic_target_members,
             critic_layer_norm=kind.critic_layer_norm,
             max_updates=cfg.offline_steps,
             hidden=tuple(cfg.hidden), torch_threads=cfg.torch_threads,
             log_dir=None if log_dir is None else str(Path(log_dir).resolve()))
        .training(train_batch_size_per_learner=cfg.batch_size)
        .learners(num_learners=0, num_gpus_per_learner=cfg.num_gpus_per_learner)
        .evaluation(evaluation_interval=1, evaluation_duration=cfg.eval_episodes,
                    evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                    evaluation_config={"explore": False}, custom_evaluation_function=batched_evaluation)
        .debugging(seed=cfg.seed)
    )


class OfflineTraining:
    """Stage 1: the method's offline kind (`Method.offline_kind()`: SAC+ML, IQL, or CQL for cql-sac)
    for `offline_steps` updates on the dataset, read through RLlib's offline API; resumable. Outputs:
    module/ (the handed-over weights, meta with alpha_off, Adam states) and DONE.json (curve, score,
    alpha_off)."""

    role = "offline"

    def stage_dir(self, ctx) -> StageDir:
        return ctx.run.offline_stage(ctx.config.method, ctx.config.variants)

    def run(self, ctx, io: StageIO) -> dict:
        return train_offline(ctx.config, ctx.dataset_dir, ctx.meta, self.stage_dir(ctx), io.console, io.metrics,
                             ctx.method.offline)


def train_offline(cfg, dataset_dir: Path, meta: DatasetMeta, stage: StageDir, console: Console,
                  metrics: MetricsLog, mode: str) -> dict:
    """Stage 1 of offline kind `mode` (a key of `OFFLINE_KINDS`) into `stage`; its DONE.json summary.

    Each evaluation point of the curve scores the policy the stage would hand over then (with
    `offline_actor_ema`, the actor's moving average; the raw actor's score beside it as
    `actor_score`)."""
    from rllib_o2o.algorithms.o2o_sac.evaluation import evaluate_policy_episodes
    from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import handover_weights

    kind = OFFLINE_KINDS[mode]
    done = stage.done()
    if done:
        console.line(f"offline stage: already complete (return {done['return']:.1f}), skipped")
        return done
    start = time.perf_counter()
    num_iterations = math.ceil(cfg.offline_steps / cfg.offline_eval_every)

    def updates(progress: dict) -> int:
        return min(progress["iteration"] * cfg.offline_eval_every, cfg.offline_steps)

    with console.progress("offline", cfg.offline_steps, "updates") as bar:
        algo = offline_config(cfg, dataset_dir, meta, kind, log_dir=stage.path).build_algo()
        states = algo.dataset_states(VALUE_STATES)
        try:
            progress = stage.restore_checkpoint(algo) or {"iteration": 0, "curve": []}
            if progress["iteration"]:
                progress[RESUMED_FROM] = [*progress.get(RESUMED_FROM, []), progress["iteration"]]
                console.line(f"offline stage: resumed at iteration {progress['iteration']}")
            bar.start(updates(progress))
            with metrics.stage(stage.path, updates(progress) if progress["iteration"] else None) as log:

                def record(progress: dict, result: dict) -> str:
                    ret = evaluation_return(result)
                    score = cfg.score(ret)
                    losses = result["learners"]["default_policy"]
                    point = {"updates": updates(progress), "return": ret, "score": score}
                    if cfg.actor_ema_rate():  # the raw actor beside its average
                        weights = algo.call_learner(lambda learner: learner.get_module_weights())
                        returns, _ = evaluate_policy_episodes(algo, lambda: algo.actor_policy(weights))
                        point.update({ACTOR_RETURN: float(returns.mean()), ACTOR_SCORE: cfg.score(float(returns.mean()))})
                    if states is not None:
                        values = algo.call_learner(lambda learner: learner.value_estimates(states))
                        point[VALUE_ESTIMATE] = values["ema_actor" if cfg.actor_ema_rate() else "actor"]
                        if cfg.actor_ema_rate():
                            point[ACTOR_VALUE_ESTIMATE] = values["actor"]
                    progress["curve"].append(point)
                    log.log(updates(progress), {EVAL_RETURN: ret, EVAL_SCORE: score, **learner_scalars(losses)})
                    return (f"{format_eval(ret, score)} critic_loss {losses[CRITIC_LOSS]:.3f} "
                            f"q_mean {losses[Q_MEAN]:.2f} alpha {losses[ALPHA]:.3f}")

                progress = train_loop(algo, stage, progress, lambda p: p["iteration"] >= num_iterations,
                                      record, cfg.checkpoint_every, bar, updates)
            weights = handover_weights(algo.call_learner(lambda learner: learner.get_module_weights()))
            optimizer_states = algo.call_learner(lambda learner: learner.get_optimizer_states())
        finally:
            algo.stop()
    # The temperature of the offline critic's soft values: 0 for a kind whose critic has no entropy term (IQL).
    alpha_off = float(np.exp(weights["log_alpha"])) if kind.update_class().learns_temperature else 0.0
    save_module_checkpoint(stage.module_path, weights, {
        "stage": "offline", "algorithm": f"O2OSAC/{mode}", "env_id": cfg.env,
        "obs_dim": meta.obs_dim, "act_dim": meta.act_dim, "hidden": list(cfg.hidden), "alpha_off": alpha_off,
        "actor_activation": "relu",
    }, optimizer_states=optimizer_states)
    last = progress["curve"][-1]
    summary = stage.mark_done({
        "return": last["return"], "score": last["score"], "curve": progress["curve"],
        "alpha_off": alpha_off, "updates": cfg.offline_steps, RESUMED_FROM: progress.get(RESUMED_FROM, []),
        "seconds": time.perf_counter() - start,
    })
    console.saved("offline", stage.module_path, f"{mode}, {format_eval(last['return'], last['score'])}, "
                  f"alpha_off {alpha_off:.3f}, {summary['seconds']:.0f}s")
    return summary
