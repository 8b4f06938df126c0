"""Stage 2: alignment - Z(s) fitted to the offline actor pi0 in a Ray task, then the critic R(s, a) = Z(s).

The Z fit (`algorithms/alignment/`) runs as a Ray task (`align_in_task`) that receives the transitions
through the object store, so any node can run it. No checkpoints: a re-run fits Z from the start.
Outputs: module/ (the aligned module: pi0, R, alpha = 1; meta with the offline temperature) and
DONE.json (the Z-fit curve, the surgery's error).
"""

from __future__ import annotations

from rllib_o2o.algorithms.alignment.task import align_in_task
from rllib_o2o.algorithms.alignment.z_fit import AlignSettings
from rllib_o2o.checkpoints import load_module_checkpoint, save_module_checkpoint
from rllib_o2o.metrics_log import HELDOUT_RESIDUAL, Z_LOSS
from rllib_o2o.rundir.stage import StageDir
from rllib_o2o.stages.common import StageIO


class Alignment:
    """Aligns the run's offline stage for its method: Z by TD on the data (aca-td, the paper), or distilled
    from the offline critic's value of pi0 (`Method.distill_baseline`)."""

    role = "alignment"

    def stage_dir(self, ctx) -> StageDir:
        return ctx.run.alignment_stage(ctx.config.method, ctx.config.variants)

    def run(self, ctx, io: StageIO) -> dict:
        cfg, meta, method, console = ctx.config, ctx.meta, ctx.method, io.console
        offline_stage, align_stage = ctx.run.offline_stage(cfg.method, cfg.variants), self.stage_dir(ctx)
        alignment = align_stage.done()
        if alignment is not None:
            console.line("alignment: already complete, skipped")
            return alignment
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
                                 f"use --method aca-td, which fits Z by TD on the data")
        verb = "distilling Z from the offline critic" if critic else "fitting Z"
        console.line(f"alignment: {verb} for at most {cfg.align_steps} steps in a Ray task")
        data = io.dataset.refs()  # through the object store: any node can run the task
        with (console.progress("alignment", cfg.align_steps, "Z steps") as bar,
              io.metrics.stage(align_stage.path, None) as log):  # no checkpoints: a re-run fits Z from the start

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
        return alignment
