"""Stage 1 replaced by an existing offline checkpoint: RLlib CQL/SAC or this project's (`--offline-checkpoint`)."""

from __future__ import annotations

from rllib_o2o.checkpoints import save_module_checkpoint
from rllib_o2o.data.rollouts import evaluate_policy
from rllib_o2o.policy import ActorPolicy
from rllib_o2o.policy_import import load_reference_actor
from rllib_o2o.rundir.stage import StageDir
from rllib_o2o.stages.common import StageIO


class OfflineImport:
    """The offline actor of a checkpoint, evaluated and saved as the run's offline stage (its module/ holds
    an actor only: methods that distil Z from an offline critic cannot start from it)."""

    role = "offline"

    def stage_dir(self, ctx) -> StageDir:
        return ctx.run.offline_stage(ctx.config.method, ctx.config.variants)

    def run(self, ctx, io: StageIO) -> dict:
        cfg, meta, stage, console = ctx.config, ctx.meta, self.stage_dir(ctx), io.console
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
