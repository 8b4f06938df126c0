"""The `rllib-o2o` command line: one subcommand per user task.

Handlers import their modules lazily so `rllib-o2o --help` stays fast and a
data-only command never pays for importing Ray or torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rllib_o2o.bench_profiles import PROFILES
from rllib_o2o.methods import METHODS


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def _cmd_validate(args: argparse.Namespace) -> int:
    from rllib_o2o.data.validate import format_stats, validate_dataset

    stats = validate_dataset(args.path, env_id=args.env)
    print(format_stats(stats))
    return 0


def _cmd_import_d4rl(args: argparse.Namespace) -> int:
    from rllib_o2o.data.d4rl import import_d4rl

    out = import_d4rl(args.file, env_id=args.env, out_dir=args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _cmd_import_minari(args: argparse.Namespace) -> int:
    from rllib_o2o.data.minari_import import import_minari

    out = import_minari(args.dataset, out_dir=args.out, env_id=args.env, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from rllib_o2o.data.generate import CollectSettings, collect

    settings = CollectSettings(
        env_id=args.env, kinds=tuple(args.kinds), num_transitions=args.num_transitions,
        medium_target_score=args.medium_target, expert_target_score=args.expert_target,
        train_env_steps=args.train_env_steps, env_steps_per_iteration=args.env_steps_per_iteration,
        random_warmup_steps=args.random_warmup_steps, max_episode_steps=args.max_episode_steps,
        num_env_runners=args.num_env_runners, seed=args.seed,
    )
    _init_ray()
    for kind, path in collect(settings, args.out, overwrite=args.overwrite, torch_threads=args.torch_threads).items():
        from rllib_o2o.data.validate import format_stats, validate_dataset

        print(f"--- {kind}")
        print(format_stats(validate_dataset(path)))
    return 0


def _init_ray() -> None:
    """Joins a cluster when RAY_ADDRESS is set (ray job submit), else starts local Ray on loopback."""
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto")
    else:
        ray.init(include_dashboard=False)


def _cmd_run(args: argparse.Namespace) -> int:
    from rllib_o2o.pipeline import PipelineConfig, embedded_default_config, run_pipeline, score_table

    values = {}
    if args.config:
        values.update(_load_config_file(args.config))
    flags = {k: v for k, v in vars(args).items() if k in PIPELINE_FLAGS and v is not None}
    values.update(flags)
    if values.get("dataset") is None and not args.config:
        cfg = embedded_default_config(values.pop("out", "runs/embedded-default"))
        for key, value in values.items():
            setattr(cfg, key, value)
        print("no --dataset given: running the embedded default (Pendulum-v1 medium data made here)")
    else:
        try:
            cfg = PipelineConfig.from_dict(values)
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from None
    try:
        from rllib_o2o.preflight import check_before_training

        check_before_training(cfg)  # config, --out, dataset, env, checkpoint: before Ray or any write
        _init_ray()
        results = run_pipeline(cfg)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(score_table(results))
    from rllib_o2o.pipeline import results_path

    print(f"results: {results_path(Path(cfg.out), cfg.method)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from rllib_o2o.bench import run_benchmark
    from rllib_o2o.report import write_report

    paths = {}
    for item in args.dataset_path or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise CLIError(f"--dataset-path takes NAME=PATH (e.g. hopper-medium=hopper_medium-v2.hdf5), got {item!r}")
        paths[name] = path
    overrides = _load_config_file(args.config) if args.config else {}
    collect_overrides = overrides.pop("collect", None) or {}
    storage_path = overrides.pop("storage_path", None)  # per run below, not a shared pipeline value
    storage_path = args.storage_path or storage_path
    try:
        if storage_path:
            from rllib_o2o.storage import check_storage

            check_storage(storage_path, args.out)
        _init_ray()
        run_benchmark(args.profile, args.out, args.data_dir, datasets=args.datasets, methods=args.methods,
                      seeds=args.seeds, overrides=overrides, dataset_paths=paths,
                      num_env_runners=args.num_env_runners, collect_overrides=collect_overrides,
                      storage_path=storage_path)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(f"report: {write_report(args.out)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rllib_o2o.report import write_report

    try:
        path = write_report(args.run_dir, args.out)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(path.read_text())
    print(f"wrote {path}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from rllib_o2o.tune import config_from_args, run_tune, settings_from_args, summary_table

    if args.method not in (None, "aca"):
        raise CLIError("tune searches ACA's online knobs; --method must be aca")

    try:
        cfg, overrides = config_from_args(args, _load_config_file, PIPELINE_FLAGS)
        settings = settings_from_args(args, _load_config_file)
        settings.validate()
        cfg.validate()
        if cfg.storage_path:
            from rllib_o2o.storage import check_storage

            check_storage(cfg.storage_path, cfg.out)
        _init_ray()
        summary = run_tune(cfg, settings, overrides)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(summary_table(summary))
    return 0


def _load_config_file(path: str) -> dict:
    import json
    from pathlib import Path

    import yaml

    try:
        text = Path(path).read_text()
        data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CLIError(f"{path}: cannot read config ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: config must be a mapping of option names to values")
    return data


PIPELINE_FLAGS = (
    "dataset", "env", "out", "preset", "offline_steps", "align_steps", "online_steps", "eval_every",
    "eval_episodes", "num_env_runners", "num_envs_per_env_runner", "num_gpus_per_learner", "seed",
    "max_episode_steps", "offline_checkpoint", "method", "storage_path", "torch_threads",
)


def _torch_threads(text: str):
    """`--torch-threads`: "auto" or a positive int, checked as the config key is."""
    from rllib_o2o.threads import AUTO, resolve_torch_threads

    try:
        value = text if text == AUTO else int(text)
        resolve_torch_threads(value, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {AUTO!r} or a positive int, got {text!r}") from None
    return value


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The pipeline's flags; shared with pipelines/run_o2o.py."""
    p.add_argument("--dataset", help="dataset dir, D4RL .hdf5 file, or local Minari id (default: embedded)")
    p.add_argument("--env", help="gymnasium env id (default: the dataset's)")
    p.add_argument("--out", help="run directory (re-running resumes it)")
    p.add_argument("--preset", choices=["random", "medium", "medium-replay", "medium-expert", "expert"])
    p.add_argument("--offline-steps", type=int, help="stage 1 gradient steps")
    p.add_argument("--align-steps", type=int, help="stage 2 Z-fit steps")
    p.add_argument("--online-steps", type=int, help="stage 3 env steps (one update per step)")
    p.add_argument("--eval-every", type=int, help="online env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation (mean action)")
    p.add_argument("--num-env-runners", type=int, help="parallel sampling workers in stage 3")
    p.add_argument("--num-envs-per-env-runner", type=int)
    p.add_argument("--num-gpus-per-learner", type=float, help="1 puts the learner on a GPU")
    p.add_argument("--max-episode-steps", type=int, help="time limit override for the env")
    p.add_argument("--seed", type=int)
    p.add_argument("--offline-checkpoint",
                   help="skip stage 1: align this checkpoint (this project's, or RLlib CQL/SAC)")
    p.add_argument("--method", choices=sorted(METHODS),
                   help="aca (default), an ACA ablation or a baseline; methods share a run dir's offline stages")
    p.add_argument("--storage-path", help="also keep the run in STORAGE_PATH/<run dir name>: a shared dir or a "
                   "pyarrow URI (s3://, gs://, hdfs://, file://); a re-run on any node resumes from it")
    p.add_argument("--torch-threads", type=_torch_threads,
                   help="torch threads per process: auto (default: the CPUs Ray reserves for it) or N for all")
    p.add_argument("--config", help="YAML/JSON file of pipeline options (flags override it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllib-o2o",
        description="Offline-to-online RL on Ray RLlib with Actor-Critic Alignment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="check a dataset directory and print its stats")
    p.add_argument("path", help="dataset directory (Parquet files + dataset.json)")
    p.add_argument("--env", default=None, help="check shapes/bounds against this gymnasium env id")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("import-d4rl", help="convert a D4RL HDF5 file to the project's Parquet schema")
    p.add_argument("file", help="D4RL-layout .hdf5 file")
    p.add_argument("--env", required=True, help="gymnasium env id the data belongs to, e.g. Hopper-v5")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_import_d4rl)

    p = sub.add_parser("import-minari", help="convert a local Minari dataset (extra: minari)")
    p.add_argument("dataset", help="Minari dataset id (under MINARI_DATASETS_PATH) or a path")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--env", default=None, help="override the gymnasium env id recorded in the dataset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_import_minari)

    p = sub.add_parser("run", help="offline pre-training -> alignment -> ACA online fine-tuning")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tune", help="Ray Tune search over ACA's online knobs from one aligned checkpoint")
    add_run_arguments(p)
    from rllib_o2o.tune import add_tune_arguments

    add_tune_arguments(p)
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("bench", help="the O2O comparison: methods x datasets x seeds, resumable, then a report")
    p.add_argument("--profile", default="smoke", choices=sorted(PROFILES),
                   help="smoke: minutes; small: Hopper-v5 medium, 3 seeds; medium: Hopper-v5 and HalfCheetah-v5 "
                        "medium, 3 seeds, 50k offline / 20k online; paper: the reference protocol")
    p.add_argument("--out", default="runs/bench", help="benchmark directory (re-running resumes it)")
    p.add_argument("--data-dir", default="runs/datasets", help="where generated datasets are cached")
    p.add_argument("--datasets", nargs="+", help="subset of the profile's datasets, e.g. hopper-medium")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="subset of the profile's methods")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the profile's)")
    p.add_argument("--dataset-path", action="append", metavar="NAME=PATH",
                   help="use this dataset dir, D4RL .hdf5 file or Minari id for NAME instead of generating it")
    p.add_argument("--num-env-runners", type=int, default=0, help="parallel sampling workers online")
    p.add_argument("--storage-path", help="also keep each run in STORAGE_PATH/<dataset>/seed<k> (see run)")
    p.add_argument("--config", help="YAML/JSON of pipeline options overriding the profile's budgets; "
                                    "its 'collect' mapping overrides the dataset generation settings")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="Markdown table + PNG curves of a benchmark or run directory")
    p.add_argument("run_dir", help="benchmark directory (rllib-o2o bench --out) or a run directory")
    p.add_argument("--out", default=None, help="report directory (default: RUN_DIR/report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("collect", help="generate D4RL-style datasets with a behaviour SAC")
    p.add_argument("--env", default="Pendulum-v1", help="gymnasium env id (Hopper-v5, HalfCheetah-v5, ...)")
    p.add_argument("--out", required=True, help="directory that receives one dataset per kind")
    p.add_argument("--kinds", nargs="+", default=["random", "medium", "medium-replay"],
                   choices=["random", "medium", "medium-replay", "expert", "medium-expert"])
    p.add_argument("--num-transitions", type=int, default=20_000, help="rollout size of each dataset")
    p.add_argument("--medium-target", type=float, default=100 / 3, help="normalised score that makes 'medium'")
    p.add_argument("--expert-target", type=float, default=None, help="stop training at this score (expert)")
    p.add_argument("--train-env-steps", type=int, default=20_000, help="behaviour SAC budget")
    p.add_argument("--env-steps-per-iteration", type=int, default=1_000, help="env steps between evaluations")
    p.add_argument("--random-warmup-steps", type=int, default=1_000)
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--num-env-runners", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=_torch_threads, default="auto",
                   help="torch threads per process of the behaviour SAC (see run)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_collect)

    return parser


def main(argv: list[str] | None = None) -> int:
    from rllib_o2o.checkpoints import CheckpointError
    from rllib_o2o.data.schema import DatasetError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, DatasetError, CheckpointError) as err:
        print(f"rllib-o2o {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
