"""Env steps/s of the online stage's sampling, by EnvRunner count and node layout.

Runs against a cluster with two worker nodes that carry the per-node resources
node_w1 / node_w2 (cluster/local_cluster.sh start --workers 2 gives exactly that):

    eval "$(cluster/local_cluster.sh env)"
    python cluster/sampling_throughput.py --runners 1 2 4 --layouts one-node two-nodes --json out.json

For each (layout, N) a placement group pins the sampling driver (the online
algorithm, as in the pipeline: ACA O2OSAC from `online_config`) to the head and
EnvRunner i to bundle i: all on worker node 1 ("one-node") or alternating worker
nodes 1 and 2 ("two-nodes"). What is timed is the stage's own sampling path
(`O2OSAC._sample_into_replay`: parallel sample on all EnvRunners, episodes back
to the driver, into the flat replay buffer), without updates. N = 0 samples in
the driver itself. The median of `--repeats` timings is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(env_id: str, num_runners: int, num_envs: int, steps: int, repeats: int) -> dict:
    import ray

    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.online import online_config

    cfg = PipelineConfig(env=env_id, num_env_runners=num_runners, num_envs_per_env_runner=num_envs,
                         replay_capacity=max(10_000, 2 * steps * (repeats + 1)), eval_episodes=1)
    algo = online_config(cfg, get_preset("medium")).build_algo()
    try:
        group = algo.env_runner_group
        nodes = group.foreach_env_runner(lambda r: ray.get_runtime_context().get_node_id(), local_env_runner=False)
        algo._sample_into_replay()  # warm-up: env resets, first forward passes
        rates = []
        for _ in range(repeats):
            start, t0 = algo.env_steps_sampled, time.perf_counter()
            while algo.env_steps_sampled - start < steps:
                algo._sample_into_replay()
            rates.append((algo.env_steps_sampled - start) / (time.perf_counter() - t0))
        return {"runners": num_runners, "envs_per_runner": num_envs, "env_steps_per_s": statistics.median(rates),
                "all": rates, "runner_nodes": nodes, "driver_node": ray.get_runtime_context().get_node_id()}
    finally:
        algo.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--layouts", nargs="+", default=["one-node", "two-nodes"], choices=["one-node", "two-nodes"])
    parser.add_argument("--num-envs-per-env-runner", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4000, help="env steps per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local-baseline", action="store_true", help="also N = 0 (sampling in the driver)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address="auto", logging_level="ERROR")
    host = ray.remote(num_cpus=1)(measure)
    rows = []
    cases = [("driver-only", 0)] if args.local_baseline else []
    cases += [(layout, n) for layout in args.layouts for n in args.runners]
    for layout, n in cases:
        runner_nodes = ["node_w1" if layout != "two-nodes" or i % 2 == 0 else "node_w2" for i in range(n)]
        bundles = [{"CPU": 1, "node_head": 0.001}] + [{"CPU": 1, node: 0.001} for node in runner_nodes]
        pg = placement_group(bundles, strategy="PACK")
        ray.get(pg.ready(), timeout=120)
        try:
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0,
                                                        placement_group_capture_child_tasks=True)
            row = ray.get(host.options(scheduling_strategy=strategy).remote(
                args.env, n, args.num_envs_per_env_runner, args.steps, args.repeats))
        finally:
            remove_placement_group(pg)
        row["layout"] = layout
        row["distinct_runner_nodes"] = len(set(row["runner_nodes"]))
        rows.append(row)
        print(f"{layout:<11} runners {n}: {row['env_steps_per_s']:8.0f} env steps/s "
              f"(runs {', '.join(f'{r:.0f}' for r in row['all'])}; runners on {row['distinct_runner_nodes']} node(s))",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"env": args.env, "steps": args.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
