"""Big offline datasets: time to the first update and peak memory at 1M and 10M rows.

For each size, a Hopper-v5-shaped dataset (11-d observations, 3-d actions, episodes of 1000 steps,
synthetic values: only the sizes matter here) is written as Parquet, then:

1. **offline stage set-up**: in a fresh process, Ray starts as a run starts it
   (`ray_start.init_ray`) and the offline stage's algorithm is built on the dataset
   (`stages.offline.offline_config(...).build_algo()`: RLlib's offline API, Ray Data's read into
   the in-memory buffer up to `offline_buffer_max_rows`, streaming above it) and makes its first
   update; seconds from the algorithm build to the end of that update.
2. **the tiny pipeline** (`rllib-o2o run ... --offline-steps 300 --align-steps 200 --online-steps
   400 --num-env-runners 1`, the method's default stages): wall time and each stage's seconds.

Memory is the peak, sampled every 0.2 s, of the summed proportional set size (PSS, so the shared
object store is counted once) of the process and every descendant (Ray's raylet, GCS, workers),
against the dataset's in-memory size (the target: < 3x).

    python benchmarks/big_dataset.py --rows 1000000 10000000 --json benchmarks/results/big_dataset_<date>.json

The pipeline's peak is also reported per phase, split at the stages' "saved" lines, with the PSS of
each process (by name: the driver, ray::EnvRunner, ray::IDLE workers, raylet, ...) at that peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from startup import ENV_ID, TINY  # the same tiny pipeline (this directory is on sys.path as a script's)

OBS_DIM, ACT_DIM, EPISODE = 11, 3, 1000


def log(msg: str) -> None:
    print(f"[big_dataset] {msg}", flush=True)


def write_synthetic(path: Path, rows: int, seed: int = 0) -> tuple[Path, int]:
    """A dataset of `rows` Hopper-shaped transitions; returns its path and in-memory bytes."""
    from rllib_o2o.data.rollouts import env_meta
    from rllib_o2o.data.schema import write_dataset

    rng = np.random.default_rng(seed)
    states = rng.standard_normal((rows + 1, OBS_DIM), dtype=np.float32)
    t = np.arange(rows, dtype=np.int64) % EPISODE
    tr = {
        "obs": states[:-1], "new_obs": states[1:],
        "actions": rng.uniform(-1, 1, (rows, ACT_DIM)).astype(np.float32),
        "rewards": rng.standard_normal(rows, dtype=np.float32),
        "terminateds": np.zeros(rows, bool), "truncateds": t == EPISODE - 1,
        "eps_id": np.arange(rows, dtype=np.int64) // EPISODE, "t": t,
    }
    tr["truncateds"][-1] = True
    nbytes = sum(a.nbytes for a in tr.values())
    write_dataset(path, tr, env_meta(ENV_ID, source="user"), rows_per_file=1_000_000)
    return path, nbytes


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _process_name(pid: int) -> str:
    """A Ray worker's title (ray::EnvRunner, ray::IDLE, ...), else the executable's or module's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return args[0].split()[0]
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]
    return Path(args[1] if Path(args[0]).name.startswith("python") and len(args) > 1 else args[0]).name


def tree_pss_by_process(root: int) -> dict[str, int]:
    """Summed PSS of a process tree, by process name (several processes of a name add up)."""
    by_name: dict[str, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(_children(pid))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
        name = _process_name(pid)
        by_name[name] = by_name.get(name, 0) + pss
    return by_name


def tree_pss_bytes(root: int) -> int:
    return sum(tree_pss_by_process(root).values())


class PeakMemory:
    """Samples the PSS of a process tree in a thread until stopped; `peak` in bytes, `samples` as
    (seconds since start, bytes)."""

    def __init__(self, root: int, interval: float = 0.2):
        self.root, self.interval, self.peak, self.samples = root, interval, 0, []
        self.breakdowns = []  # per sample: PSS by process name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()

    def _run(self):
        while not self._stop.is_set():
            by_name = tree_pss_by_process(self.root)
            pss = sum(by_name.values())
            self.samples.append((time.perf_counter() - self._start, pss))
            self.breakdowns.append(by_name)
            self.peak = max(self.peak, pss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_pss_bytes(self.root))


def offline_setup_child(dataset: str) -> None:
    """In a fresh process: Ray, then the offline algorithm built on `dataset` and its first update."""
    import ray

    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.data.schema import read_meta
    from rllib_o2o.ray_start import init_ray
    from rllib_o2o.stages.offline import offline_config

    init_ray(quiet=True)  # as a run starts it (its Ray processes' environment included)
    cfg = PipelineConfig(dataset=dataset, env=ENV_ID, offline_eval_every=1, eval_episodes=1, torch_threads=1)
    start = time.perf_counter()
    algo = offline_config(cfg, Path(dataset), read_meta(dataset)).build_algo()
    built = time.perf_counter()
    algo.train()
    print(json.dumps({"build_seconds": built - start, "first_update_seconds": time.perf_counter() - start,
                      "buffer": type(algo.replay).__name__}), flush=True)
    algo.stop()
    ray.shutdown()


# A stage's line once its outputs are saved: the phases of a pipeline run, in order.
PHASE_ENDS = (("until the offline stage is saved", "offline: saved"),
              ("alignment", "alignment: saved"), ("online stage", "online: saved"))


def run_measured(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, int, dict]:
    """Runs `cmd`; returns its outcome, wall seconds, peak tree PSS and the peak within each phase
    of PHASE_ENDS (by the time the phase's line was printed; the rest is "after the online stage")."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # lines as they are printed
    lines, ends = [], []
    with PeakMemory(proc.pid) as mem:
        for line in proc.stdout:
            lines.append(line)
            if len(ends) < len(PHASE_ENDS) and line.startswith(PHASE_ENDS[len(ends)][1]):
                ends.append(time.perf_counter() - start)
        proc.wait()
    stdout = "".join(lines)
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, "")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stdout[-4000:]}")
    bounds = [0.0, *ends, math.inf]
    names = [name for name, _ in PHASE_ENDS[:len(ends)]] + ["after the online stage" if ends else "all"]
    phases = {}
    for name, lo, hi in zip(names, bounds, bounds[1:]):
        inside = [i for i, (t, _) in enumerate(mem.samples) if lo <= t < hi]
        top = max(inside, key=lambda i: mem.samples[i][1], default=None)
        phases[name] = {"peak_pss_bytes": 0 if top is None else mem.samples[top][1],
                        "by_process": {} if top is None else dict(sorted(mem.breakdowns[top].items(),
                                                                         key=lambda kv: -kv[1]))}
    return done, time.perf_counter() - start, mem.peak, phases


def measure(rows: int, root: Path) -> dict:
    dataset, nbytes = write_synthetic(root / f"hopper-{rows}", rows)
    log(f"{rows} rows written ({nbytes / 2**20:.0f} MiB in memory)")
    done, wall, peak, _ = run_measured([sys.executable, __file__, "--offline-setup-child", str(dataset)])
    setup = json.loads(done.stdout.strip().splitlines()[-1])
    setup.update(wall_seconds=wall, peak_pss_bytes=peak, peak_over_dataset=peak / nbytes)
    log(f"offline set-up: first update after {setup['first_update_seconds']:.1f}s ({setup['buffer']}), "
        f"peak {peak / 2**20:.0f} MiB = {peak / nbytes:.2f}x the dataset")
    out = root / f"run-{rows}"
    cmd = [sys.executable, "-m", "rllib_o2o.cli", "run", "--dataset", str(dataset), *TINY, "--out", str(out)]
    _, wall, peak, phases = run_measured(cmd)
    results = json.loads(next(out.glob("results*.json")).read_text())
    pipeline = {"wall_seconds": wall, "peak_pss_bytes": peak, "peak_over_dataset": peak / nbytes,
                "peak_pss_bytes_by_phase": phases,
                "stage_seconds": {s: results[s]["seconds"] for s in ("offline", "alignment", "online") if results[s]}}
    log(f"tiny pipeline: {wall:.1f}s (stages {pipeline['stage_seconds']}), peak {peak / 2**20:.0f} MiB = "
        f"{peak / nbytes:.2f}x the dataset; by phase (MiB): "
        + ", ".join(f"{k} {v['peak_pss_bytes'] / 2**20:.0f}" for k, v in phases.items()))
    for name, phase in phases.items():
        log(f"  {name}, by process (MiB): " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in phase["by_process"].items()))
    return {"rows": rows, "dataset_bytes": nbytes, "offline_setup": setup, "tiny_pipeline": pipeline}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--offline-setup-child", metavar="DATASET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.offline_setup_child:
        offline_setup_child(args.offline_setup_child)
        return {}
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    root = Path(tempfile.mkdtemp(prefix="o2o-big-"))
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
           "python": platform.python_version(), "loadavg_start": os.getloadavg(), "sizes": []}
    for rows in args.rows:
        out["sizes"].append(measure(rows, root))
    out["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
