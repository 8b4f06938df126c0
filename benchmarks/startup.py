"""The fixed cost of a run: the tiny pipeline's wall time and where it goes.

The tiny pipeline is the smallest real run a user starts (the yardstick of the start-up target, < 40 s):

    rllib-o2o run --dataset hopper.hdf5 --env Hopper-v5 --preset random --offline-steps 300 \
        --align-steps 200 --online-steps 400 --num-env-runners 1

on a small D4RL-layout HDF5 file of random Hopper-v5 transitions made here. Its work (300 + 400
updates, 200 Z steps, 400 env steps, three evaluations) takes a few seconds; the rest is fixed
cost: Python imports, Ray's start, Ray Data's planning, building the algorithms and their
EnvRunners, checkpoints and shutdown.

1. Wall time of the command as a user runs it (a fresh process and run directory each time),
   `--repeats` times.
2. Where it goes: the same run once in this process under cProfile, as the cumulative seconds
   of the functions that make up a stage's fixed cost (Ray start, algorithm builds, EnvRunner
   start, Ray Data's read into the buffer, the alignment task, checkpoints, shutdown) beside the
   updates and evaluations themselves. cProfile slows Python-heavy code, so the parts add up to
   more than the wall time of part 1; read them as shares.

    python benchmarks/startup.py --json benchmarks/results/startup_<date>.json
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV_ID = "Hopper-v5"
# The tiny pipeline's options (beside --dataset and --out), as `rllib_o2o.run` keywords and as flags.
TINY_OPTIONS = {"env": ENV_ID, "preset": "random", "offline_steps": 300, "align_steps": 200, "online_steps": 400,
                "num_env_runners": 1}
TINY = [arg for key, value in TINY_OPTIONS.items() for arg in (f"--{key.replace('_', '-')}", str(value))]

# (label, file suffix, function name): the cumulative time of each, summed over its calls.
PARTS = (
    ("checks before Ray (preflight)", "rllib_o2o/preflight.py", "check_before_training"),
    ("ray.init", "ray/_private/worker.py", "init"),
    ("dataset: D4RL file to Parquet, once per run dir", "rllib_o2o/data/d4rl.py", "import_d4rl"),
    ("algorithm builds (offline, online)", "ray/rllib/algorithms/algorithm_config.py", "build_algo"),
    ("  of which EnvRunner groups", "ray/rllib/env/env_runner_group.py", "__init__"),
    ("  of which Ray Data read into the buffer", "rllib_o2o/algorithms/o2o_sac/o2o_sac.py", "_load_offline_data"),
    ("updates (offline and online)", "rllib_o2o/algorithms/o2o_sac/o2o_sac.py", "_learn"),
    ("online sampling", "rllib_o2o/algorithms/o2o_sac/o2o_sac.py", "_sample_into_replay"),
    ("evaluations", "rllib_o2o/algorithms/o2o_sac/evaluation.py", "batched_evaluation"),
    ("stage checkpoints", "rllib_o2o/rundir/stage.py", "save_checkpoint"),
    ("alignment (Ray task, end to end)", "rllib_o2o/algorithms/alignment/task.py", "align_in_task"),
    ("algorithm stop", "ray/tune/trainable/trainable.py", "stop"),
    ("ray.shutdown", "ray/_private/worker.py", "shutdown"),
    ("whole run (rllib_o2o.run)", "rllib_o2o/api.py", "run"),
)


def log(msg: str) -> None:
    print(f"[startup] {msg}", flush=True)


def write_d4rl_file(path: Path, rows: int, seed: int) -> Path:
    """`rows` random-policy Hopper-v5 transitions in D4RL's HDF5 layout (episodes end in terminals or timeouts)."""
    import h5py

    from rllib_o2o.data.rollouts import collect_transitions

    tr = collect_transitions(ENV_ID, rows, seed=seed)
    ends = np.r_[tr["eps_id"][1:] != tr["eps_id"][:-1], True]
    timeouts = ends & (tr["terminateds"] == 0)
    with h5py.File(path, "w") as f:
        f["observations"] = tr["obs"]
        f["next_observations"] = tr["new_obs"]
        f["actions"] = tr["actions"]
        f["rewards"] = tr["rewards"]
        f["terminals"] = tr["terminateds"].astype(bool)
        f["timeouts"] = timeouts
    return path


def command_seconds(dataset: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "rllib_o2o.cli", "run", "--dataset", str(dataset), *TINY, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the tiny pipeline failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def profiled_parts(dataset: Path, out: Path, dump: Path | None = None) -> dict:
    from rllib_o2o.api import run

    profile = cProfile.Profile()
    profile.enable()
    run(dataset=str(dataset), out=str(out), **TINY_OPTIONS)
    profile.disable()
    if dump:
        profile.dump_stats(dump)
    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, primitive, tottime, cumtime, callers)}
    parts = {}
    for label, suffix, name in PARTS:
        hits = [(v[0], v[3]) for (file, _, fn), v in stats.items() if fn == name and file.endswith(suffix)]
        parts[label] = {"seconds": round(sum(c for _, c in hits), 3), "calls": sum(n for n, _ in hits)}
    return parts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="transitions in the D4RL file")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the command")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled breakdown")
    parser.add_argument("--profile-out", type=Path, help="also write the raw cProfile stats here (pstats)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="o2o-startup-"))
    dataset = write_d4rl_file(tmp / "hopper-random.hdf5", args.rows, seed=0)
    out: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "loadavg_start": os.getloadavg(),
        "tiny_pipeline": ["rllib-o2o", "run", "--dataset", "<D4RL file>", *TINY], "dataset_rows": args.rows,
    }
    times = []
    for r in range(args.repeats):
        times.append(command_seconds(dataset, tmp / f"run{r}"))
        log(f"tiny pipeline, run {r + 1}/{args.repeats}: {times[-1]:.1f} s")
    out["wall_seconds"] = times
    if not args.no_profile:
        out["profiled_parts"] = profiled_parts(dataset, tmp / "profiled", args.profile_out)
        for label, part in out["profiled_parts"].items():
            log(f"{label:45s} {part['seconds']:7.1f} s  ({part['calls']} calls)")
    out["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
