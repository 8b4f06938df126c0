"""The whole offline-to-online pipeline: the stages a method needs, planned and run in order.

`plan` names them: the offline stage (trained, or imported from a checkpoint), the alignment
(methods that start from the aligned critic) and the online stage. Each writes its outputs
under the run directory and a DONE.json only after they are durable, so a re-run skips
finished stages and resumes an interrupted one from its last checkpoint. What the stages share
is made once, before any runs: the `context.RunContext`. With `storage_path` the run directory
is mirrored to STORAGE_PATH/<run dir name> (`rllib_o2o.rundir.mirror`), so the re-run may be on
another node. A run holds its directory's lock (`rllib_o2o.rundir.lock`) from start to end: a
second process on the same run is refused. `run_stage` runs one stage of a run instead, holding
that stage's lock only, so that a scheduler (`rllib-o2o bench`) can run a run directory's stages
as separate tasks, side by side.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import ray

from rllib_o2o.checkpoints import write_json_atomic
from rllib_o2o.config import PipelineConfig
from rllib_o2o.console import Console, quiet_libraries
from rllib_o2o.context import EXECUTION_KEYS, LOCATION_KEYS, RunContext
from rllib_o2o.data.fingerprint import DATASET_FINGERPRINT
from rllib_o2o.data.shared import SharedDataset
from rllib_o2o.metrics_log import MetricsLog, require_wandb
from rllib_o2o.ray_start import init_ray
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import stage_name
from rllib_o2o.stages.alignment_stage import Alignment
from rllib_o2o.stages.common import StageIO
from rllib_o2o.stages.offline import OfflineTraining
from rllib_o2o.stages.offline_import import OfflineImport
from rllib_o2o.stages.online import OnlineFineTuning, seeds_replay


def open_run(cfg: PipelineConfig) -> RunDir:
    """The run directory `cfg` describes, after validating `cfg`, mirrored when it has a storage path.

    Nothing is written; take `run.lock()` before `RunContext.open`."""
    cfg.validate()
    return RunDir.open(cfg.out, cfg.storage_path)


def plan(ctx: RunContext) -> list:
    """The stages `ctx.method` needs, in order: offline (trained, or imported from `offline_checkpoint`),
    alignment (methods that start from the aligned critic), online."""
    method, stages = ctx.method, []
    if method.offline is not None:
        imported = ctx.config.offline_checkpoint and method.offline == "sacml"
        stages.append(OfflineImport() if imported else OfflineTraining())
    if method.start == "aligned":
        stages.append(Alignment())
    stages.append(OnlineFineTuning())
    return stages


def run_pipeline(cfg: PipelineConfig, validated=None) -> dict:
    """Runs or resumes the run `cfg` describes in `cfg.out`; returns the results, also written to
    RUN_DIR/results[-<method>].json.

    Stages already done in the run directory are skipped, an interrupted one resumes from its
    last checkpoint. `cfg` is not changed: the run's completed config (env, preset and reference
    scores from the dataset) is its context's. This is the pipeline alone: `rllib_o2o.run` first
    makes the checks of `rllib-o2o run` (nothing is written before they pass) and starts Ray,
    which generating the embedded default dataset already needs. `validated`: the checks'
    DatasetStats of the dataset directory, so that it is not read again to validate it.

    Results: env_id, dataset, preset, method, seed, reference_scores, offline_data_online; offline and
    alignment (their reports, None for a method without that stage), online (curve of
    evaluations, dip, final score); offline_score (online step 0), dip, final_score
    (normalised scores, None without reference scores), dataset_score (the data's mean
    episode, normalised), dataset_fingerprint (the rows' content) and seconds_this_invocation.
    """
    require_wandb(cfg.wandb_project)  # before anything trains (the embedded dataset's generation included)
    quiet_libraries(cfg.verbose)
    start = time.perf_counter()
    run = open_run(cfg)
    with run.lock():
        ctx = RunContext.open(cfg, run, validated)
        return _write_results(ctx, run_stages(ctx, plan(ctx), Console()), start)


def run_stage(cfg: PipelineConfig, role: str) -> dict:
    """Runs the `role` stage ("offline", "alignment" or "online") of `cfg.method`'s plan alone, holding its
    stage's lock and the run's lock shared (`RunDir.lock(stage=...)`): other processes may run the run
    directory's other stages meanwhile. The stages before it must be done (a scheduler ran them first) and
    are skipped; an interrupted `role` stage resumes from its checkpoint. The online stage also writes the
    results file, as `run_pipeline` does. Returns the stage's summary; the online stage's: the results."""
    require_wandb(cfg.wandb_project)
    quiet_libraries(cfg.verbose)
    start = time.perf_counter()
    run = open_run(cfg)
    name = stage_name(cfg.method, role, cfg.variants)
    if name is None:
        raise ValueError(f"method {cfg.method!r} has no {role} stage")
    with run.lock(stage=name):
        ctx = RunContext.open(cfg, run)
        stages = plan(ctx)
        roles = [stage.role for stage in stages]
        if role not in roles:
            raise ValueError(f"method {cfg.method!r} has no {role} stage")
        stages = stages[:roles.index(role) + 1]
        missing = [stage.role for stage in stages[:-1] if not stage.stage_dir(ctx).done()]
        if missing:
            raise RuntimeError(f"{run.path}: the {role} stage of {cfg.method!r} needs its {', '.join(missing)} "
                               "stage(s) done first")
        summaries = run_stages(ctx, stages, Console())
        return summaries[role] if role != "online" else _write_results(ctx, summaries, start)


def run_stages(ctx: RunContext, stages: list, console: Console) -> dict:
    """Runs `stages` in order (each skips itself when done); returns their summaries by role."""
    cfg = ctx.config
    console.line(f"run {ctx.run.path}: env {cfg.env}, dataset {ctx.dataset_dir}, preset {cfg.preset} {ctx.preset}")
    owns_ray = init_ray(quiet=not cfg.verbose)
    metrics = MetricsLog(cfg.wandb_project, run_name=f"{ctx.run.path.resolve().name}-{cfg.method}",
                         run_id=wandb_run_id(cfg), run_dir=ctx.run.path, config=asdict(cfg))
    io = StageIO(console, metrics, SharedDataset(ctx.dataset_dir))  # read once, by the first stage that needs it
    try:
        return {stage.role: stage.run(ctx, io) for stage in stages}
    finally:
        io.dataset.release()
        metrics.close()
        if owns_ray:
            ray.shutdown()


def _write_results(ctx: RunContext, summaries: dict, start: float) -> dict:
    """The run's results (`_results`), written to RUN_DIR/results[-<method>].json and pushed to storage."""
    results = _results(ctx, summaries, time.perf_counter() - start)
    write_json_atomic(ctx.run.results_path(ctx.config.method), results)
    ctx.run.push_file(ctx.run.results_path(ctx.config.method))
    return results


def _results(ctx: RunContext, summaries: dict, seconds: float) -> dict:
    cfg, offline, alignment, online = ctx.config, summaries.get("offline"), summaries.get("alignment"), summaries["online"]
    return {
        "env_id": cfg.env,
        "dataset": str(ctx.dataset_dir),
        "preset": cfg.preset,
        "method": cfg.method,
        "seed": cfg.seed,
        "reference_scores": [cfg.ref_min_score, cfg.ref_max_score],
        # the behaviour data's mean episode, normalised: what the offline policy is read against
        "dataset_score": cfg.score(ctx.stats.return_mean),
        # the rows trained on (`data.fingerprint`): `report` refuses to average one name's runs on different data
        DATASET_FINGERPRINT: ctx.stats.fingerprint,
        # whether the online stage keeps offline rows in its replay buffer (seeded episodes, Balanced Replay):
        # False is ACA's setting, where the offline data is not available (or not kept) online
        "offline_data_online": seeds_replay(cfg.method, ctx.preset, cfg.variants),
        "offline": offline and {k: offline[k] for k in ("score", "return", "updates", "seconds", "curve")},
        "alignment": alignment and {k: alignment[k] for k in ("z_loss_curve", "surgery_max_abs_error", "seconds",
                                                               "z_steps_per_s")},
        "online": online,
        "offline_score": online["curve"][0]["score"],
        "dip": online["dip"],
        "final_score": online["final_score"],
        "seconds_this_invocation": seconds,
    }


def wandb_run_id(cfg: PipelineConfig) -> str:
    """One W&B run per run directory and method, the same on every invocation and node (a resumed
    run appends to it): a digest of the run dir's name and what the run computes."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in LOCATION_KEYS + EXECUTION_KEYS}
    text = json.dumps([Path(cfg.out).resolve().name, identity], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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
