"""What a tune run searches and how: the experiment's settings and each trial's online stage."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from rllib_o2o.tune.space import DEFAULT_SPACE, KNOBS, domain

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
            domain(name, spec)  # raises on a malformed spec


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
