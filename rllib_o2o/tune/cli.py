"""`rllib-o2o tune`'s flags and what they make: the experiment's settings and the aligned run's config."""

from __future__ import annotations

import argparse
import copy
import json

from rllib_o2o.tune.settings import ONLINE_FIELDS, TuneSettings
from rllib_o2o.tune.space import DEFAULT_SPACE, KNOBS

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
