"""`rllib_o2o.run`: the pipeline from Python, with the checks and Ray set-up of `rllib-o2o run`.

Ray and torch are imported only when a run starts, so `import rllib_o2o` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

from rllib_o2o.config import PipelineConfig, config_from_options
from rllib_o2o.ray_start import init_ray


def run(config: PipelineConfig | Mapping | None = None, /, **options) -> dict:
    """Checks, then runs (or resumes) one pipeline run; returns its results (also in RUN_DIR/results.json).

    `config` is a PipelineConfig, taken with its values as they are, or a mapping of
    options; `options` override either. Options without a dataset describe the embedded
    default, as on the command line (`rllib_o2o.config.config_from_options`). The
    config is copied, never changed. Everything `rllib-o2o run` checks before training
    (`rllib_o2o.preflight.check_before_training`) raises here before Ray starts: a
    ValueError (DatasetError, CheckpointError, UnknownNameError are ValueErrors) with
    a one-line message. Ray is started as the command line starts it (`init_ray`) and
    shut down at the end, unless it was running already.
    """
    from rllib_o2o.preflight import check_before_training

    if isinstance(config, PipelineConfig):
        cfg = PipelineConfig.from_dict({**asdict(config), **options})
    else:
        cfg = config_from_options({**(config or {}), **options})
    validated = check_before_training(cfg)
    started = init_ray(quiet=not cfg.verbose)
    try:
        from rllib_o2o.pipeline import run_pipeline

        return run_pipeline(cfg, validated=validated)
    finally:
        if started:
            import ray

            ray.shutdown()
