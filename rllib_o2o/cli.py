"""The `rllib-o2o` command line: one subcommand per user task.

Handlers import their modules lazily so `rllib-o2o --help` stays fast and a
data-only command never pays for importing Ray or torch.
"""

from __future__ import annotations

import argparse
import sys


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

    return parser


def main(argv: list[str] | None = None) -> int:
    from rllib_o2o.data.schema import DatasetError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, DatasetError) as err:
        print(f"rllib-o2o {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
