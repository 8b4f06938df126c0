"""Env steps/s of the online stage's sampling path against raw single-process MuJoCo stepping.

The online stage's own config (`stages.online.online_config`, the run's defaults except
the counts given here) samples through `O2OSAC._sample_into_replay` (RLlib's
`synchronous_parallel_sample`, then the flat replay buffer) with each
`RUNNERSxENVS` contender: EnvRunners (0: the driver samples) times vectorised envs per
EnvRunner. `default` is what a user gets without setting either. The sampling limit is
raw `env.step` with random actions in one process. Both are measured in the same run,
so the ratio holds on a loaded machine too.

    python benchmarks/sampling.py --json sampling.json                     # ~2 min on 2 cores
    python benchmarks/sampling.py --contenders 1x1 1x4 1x8 default --steps 4000
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import raw_env_rate  # noqa: E402

DEFAULT = "default"


def parse_contender(text: str) -> dict:
    """'1x8' -> one EnvRunner with 8 envs; 'default' -> the PipelineConfig defaults."""
    if text == DEFAULT:
        return {}
    runners, _, envs = text.partition("x")
    if not (runners.isdigit() and envs.isdigit()) or int(envs) < 1:
        raise ValueError(f"contender {text!r} must be RUNNERSxENVS (e.g. 1x8) or {DEFAULT!r}")
    return {"num_env_runners": int(runners), "num_envs_per_env_runner": int(envs)}


def sample_rate(env_id: str, counts: dict, steps: int, threads) -> dict:
    """Env steps/s of the online stage's sampling with these EnvRunner / env counts."""
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.online import online_config

    cfg = PipelineConfig(env=env_id, seed=0, torch_threads=threads, method="sac-scratch", **counts)
    algo = online_config(cfg, get_preset("medium")).build_algo()
    try:
        algo._sample_into_replay()  # warm-up: first episodes, connectors
        calls, done = 0, 0
        start = time.perf_counter()
        while done < steps:
            done += algo._sample_into_replay()
            calls += 1
        seconds = time.perf_counter() - start
    finally:
        algo.stop()
    return {"num_env_runners": cfg.num_env_runners, "num_envs_per_env_runner": cfg.num_envs_per_env_runner,
            "env_steps_per_s": done / seconds, "env_steps_per_sample_call": done / calls}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--contenders", nargs="+", default=["0x1", "1x1", "1x2", "1x4", "1x8", "1x10", DEFAULT],
                        help="RUNNERSxENVS, or 'default' (the run's defaults)")
    parser.add_argument("--steps", type=int, default=3000, help="env steps timed per contender")
    parser.add_argument("--raw-steps", type=int, default=20_000, help="env steps of the raw env.step loop")
    parser.add_argument("--threads", default="auto", help="torch_threads of the runs ('auto': the default)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    contenders = {name: parse_contender(name) for name in args.contenders}
    threads = args.threads if args.threads == "auto" else int(args.threads)

    import ray

    ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False)
    try:
        raw = raw_env_rate(args.raw_steps, env_id=args.env)
        print(f"raw {args.env} env.step, one process: {raw:.0f} steps/s", flush=True)
        results = {}
        for name, counts in contenders.items():
            result = sample_rate(args.env, counts, args.steps, threads)
            result["ratio_to_raw"] = result["env_steps_per_s"] / raw
            results[name] = result
            print(f"{name:>8}: {result['num_env_runners']} EnvRunner(s) x {result['num_envs_per_env_runner']} "
                  f"env(s): {result['env_steps_per_s']:.0f} env steps/s, {result['ratio_to_raw']:.0%} of raw "
                  f"({result['env_steps_per_sample_call']:.0f} steps per sample call)", flush=True)
    finally:
        ray.shutdown()
    out = {"env": args.env, "raw_env_steps_per_s": raw, "contenders": results, "steps": args.steps,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
