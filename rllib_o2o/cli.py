"""The `rllib-o2o` command line: one subcommand per user task.

Handlers import their modules lazily so `rllib-o2o --help` stays fast and a
data-only command never pays for importing Ray or torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rllib_o2o.bench_profiles import PROFILES
from rllib_o2o.methods import DEFAULT_METHOD, METHODS, needs_alignment


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
    from rllib_o2o.stages.collect import CollectSettings, collect

    settings = CollectSettings(
        env_id=args.env, kinds=tuple(args.kinds), num_transitions=args.num_transitions,
        medium_target_score=args.medium_target, expert_target_score=args.expert_target,
        train_env_steps=args.train_env_steps, env_steps_per_iteration=args.env_steps_per_iteration,
        random_warmup_steps=args.random_warmup_steps, max_episode_steps=args.max_episode_steps,
        num_env_runners=args.num_env_runners, seed=args.seed,
    )
    from rllib_o2o.ray_start import init_ray

    init_ray()
    for kind, path in collect(settings, args.out, overwrite=args.overwrite, torch_threads=args.torch_threads).items():
        from rllib_o2o.data.validate import format_stats, validate_dataset

        print(f"--- {kind}")
        print(format_stats(validate_dataset(path)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from rllib_o2o.api import run
    from rllib_o2o.config import config_from_options

    try:
        cfg = config_from_options(_pipeline_values(args))
        if cfg.dataset is None:
            print("no dataset given: running the embedded default (Pendulum-v1 medium data made here)")
        results = run(cfg)  # config, --out, dataset, env, checkpoint checked before Ray or any write
    except ValueError as err:
        raise CLIError(str(err)) from None
    from rllib_o2o.pipeline import score_table
    from rllib_o2o.rundir.layout import RunDir

    print(score_table(results))
    print(f"results: {RunDir(cfg.out).results_path(cfg.method)}")
    print(next_steps(cfg.out, cfg.method))
    return 0


def next_steps(out: str, method: str) -> str:
    """What a user runs after a run: the comparison, the curves, the policy."""
    other = "naive" if method != "naive" else DEFAULT_METHOD
    steps = [(f"rllib-o2o run <the same options> --method {other}", f"{other} from the same offline stage"),
             (f"rllib-o2o report {out}", "the table and curves of every method run here"),
             (f"rllib-o2o export {out} --out {out}/policy", "the trained policy, then rllib-o2o evaluate")]
    width = max(len(cmd) for cmd, _ in steps)
    return "\n".join(["next:"] + [f"  {cmd:<{width}}  # {why}" for cmd, why in steps])


def _pipeline_values(args: argparse.Namespace) -> dict:
    """The --config file's options with the flags given on the command line over them."""
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.flags import given_values

    values = _load_config_file(args.config) if args.config else {}
    return {**values, **given_values(args, PipelineConfig)}


def _cmd_bench(args: argparse.Namespace) -> int:
    from rllib_o2o.bench import run_benchmark
    from rllib_o2o.bench_tasks import BenchmarkError, BenchmarkInterrupted
    from rllib_o2o.report import write_report
    from rllib_o2o.rundir.names import BENCH_TASKS_FILE

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
    if args.verbose:
        overrides["verbose"] = True
    try:
        if storage_path:
            from rllib_o2o.rundir.mirror import check_storage

            check_storage(storage_path, args.out)
        from rllib_o2o.ray_start import init_ray

        init_ray(quiet=not overrides.get("verbose", False))
        run_benchmark(args.profile, args.out, args.data_dir, datasets=args.datasets, methods=args.methods,
                      seeds=args.seeds, overrides=overrides, dataset_paths=paths,
                      num_env_runners=args.num_env_runners, collect_overrides=collect_overrides,
                      storage_path=storage_path, unit_cpus=args.unit_cpus, unit_gpus=args.unit_gpus,
                      max_retries=args.max_retries)
    except BenchmarkError as err:  # the report still shows the runs that finished
        print(f"report: {write_report(args.out)}")
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BenchmarkInterrupted as interrupted:
        stopped = sum(row["status"] == "interrupted" for row in interrupted.rows)
        try:  # of the runs that finished, if any did
            print(f"report: {write_report(args.out)}")
        except ValueError:
            pass
        print(f"interrupted: {stopped} submitted stage task(s) stopped, the running ones at their last checkpoint; "
              f"re-run the same command to resume (tasks: {Path(args.out) / BENCH_TASKS_FILE})", file=sys.stderr)
        return 130
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


def _cmd_export(args: argparse.Namespace) -> int:
    from rllib_o2o.export import ACTOR_FILE, POLICY_FILE, export_policy

    try:
        spec = export_policy(args.run_dir, args.out, stage=args.stage, method=args.method, overwrite=args.overwrite)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(f"exported the {spec.source_method} {spec.source_stage} actor ({spec.step} {spec.step_unit}, "
          f"{spec.source_checkpoint}) -> {args.out}/{ACTOR_FILE}, {args.out}/{POLICY_FILE}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rllib_o2o.checkpoints import write_json_atomic
    from rllib_o2o.export import evaluate, load_policy

    try:
        policy = load_policy(args.policy, stochastic=args.stochastic, seed=args.seed)
        result = evaluate(policy, args.env, args.episodes, args.seed, args.max_episode_steps)
    except ValueError as err:
        raise CLIError(str(err)) from None
    score = "" if result["score"] is None else f", normalised score {result['score']:.1f}"
    print(f"{result['env_id']}: {result['episodes']} episode(s), return {result['mean_return']:.1f} "
          f"+- {result['std_return']:.1f}{score}")
    if args.json:
        write_json_atomic(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from rllib_o2o.tune import config_from_args, run_tune, settings_from_args, summary_table

    try:
        from rllib_o2o.config import PipelineConfig
        from rllib_o2o.flags import given_values

        cfg, overrides = config_from_args(args, _load_config_file, given_values(args, PipelineConfig))
        settings = settings_from_args(args, _load_config_file)
        settings.validate()
        cfg.validate()
        if not needs_alignment(cfg.method, cfg.variants):
            raise CLIError(f"tune searches ACA's online knobs from an aligned critic; method {cfg.method} has no "
                           f"alignment stage (use {DEFAULT_METHOD}, the default, or another ACA)")
        if cfg.storage_path:
            from rllib_o2o.rundir.mirror import check_storage

            check_storage(cfg.storage_path, cfg.out)
        from rllib_o2o.ray_start import init_ray

        init_ray()
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
    """The pipeline's flags, one per PipelineConfig field (rllib_o2o/flags.py); shared with
    pipelines/run_o2o.py and `tune`."""
    from rllib_o2o.config import PipelineConfig, embedded_default_config
    from rllib_o2o.flags import add_config_flags

    add_config_flags(p, PipelineConfig, alternative=("without a dataset", embedded_default_config()))
    p.add_argument("--config", help="YAML/JSON file of pipeline options, keys as the flags with underscores "
                   "(flags override it)")


def _version() -> str:
    """The installed distribution's version; the package's own in a source tree that is not installed
    (e.g. pipelines/run_o2o.py under `ray job submit --working-dir .`)."""
    from importlib import metadata

    try:
        return metadata.version("rllib-o2o")
    except metadata.PackageNotFoundError:
        from rllib_o2o import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllib-o2o",
        description="Offline-to-online RL on Ray RLlib with Actor-Critic Alignment.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
                   help="smoke: minutes; small: Hopper-v5 medium, 3 seeds; medium: the committed Hopper-v5, "
                        "HalfCheetah-v5 and Walker2d-v5 medium data, 3 seeds, 50k offline / 20k online; "
                        "paper: the reference protocol")
    p.add_argument("--out", default="runs/bench", help="benchmark directory (re-running resumes it)")
    p.add_argument("--data-dir", default="runs/datasets", help="where generated datasets are cached")
    p.add_argument("--datasets", nargs="+", help="subset of the profile's datasets, e.g. hopper-medium")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help=f"subset of the profile's methods: {', '.join(METHODS)}, or variants named in --config's "
                        f"`variants` (benchmarks/variants.yaml)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the profile's)")
    p.add_argument("--dataset-path", action="append", metavar="NAME=PATH",
                   help="use this dataset dir, D4RL .hdf5 file or Minari id for NAME instead of generating it")
    p.add_argument("--num-env-runners", type=int, default=0, help="parallel sampling workers online")
    p.add_argument("--unit-cpus", type=float, default=1.0,
                   help="CPUs of each stage task (each runs one stage of one run; as many run at once as the "
                        "cluster, or this machine, has CPUs for; torch threads follow unless --config sets them)")
    p.add_argument("--unit-gpus", type=float, default=0.0, help="GPUs of each stage task (e.g. 0.25: four share one)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="Ray's retries of a stage task whose process died (killed, node lost); it resumes from "
                        "its last checkpoint")
    p.add_argument("--storage-path", help="also keep each run in STORAGE_PATH/<dataset>/seed<k> (see run)")
    p.add_argument("--verbose", action="store_true", help="Ray's and the libraries' own log lines too (see run)")
    p.add_argument("--config", help="YAML/JSON of pipeline options overriding the profile's budgets; "
                                    "its 'collect' mapping overrides the dataset generation settings")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="Markdown table + PNG curves of a benchmark or run directory")
    p.add_argument("run_dir", help="benchmark directory (rllib-o2o bench --out) or a run directory")
    p.add_argument("--out", default=None, help="report directory (default: RUN_DIR/report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write a run's trained actor as a standalone policy (tensors + policy.json)")
    p.add_argument("run_dir", help="run directory (rllib-o2o run --out); a run in progress gives its newest checkpoint")
    p.add_argument("--out", required=True, help="policy directory to write")
    p.add_argument("--stage", choices=["online", "offline"],
                   help="default: online if it has a checkpoint, else the offline actor pi0")
    p.add_argument("--method", help="which method's policy (default: the run's config.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("evaluate", help="run an exported policy in its gymnasium env (no Ray)")
    p.add_argument("policy", help="exported policy directory (rllib-o2o export --out)")
    p.add_argument("--env", help="gymnasium env id (default: the policy's)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--max-episode-steps", type=int, help="time limit (default: the run's, else the env's)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    p.add_argument("--json", help="also write the returns and score to this JSON file")
    p.set_defaults(func=_cmd_evaluate)

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
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; a stage resumes from its last checkpoint
        print(f"rllib-o2o {args.command}: interrupted (the same command resumes a run from its last checkpoint)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
