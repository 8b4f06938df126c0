"""`rllib-o2o run` with the online EnvRunners pinned to nodes holding a custom resource.

    ray job submit --working-dir . -- python cluster/placement_job.py \
        --runner-resource worker_node --dataset DIR --out RUN_DIR --num-env-runners 2 [run flags]

Every EnvRunner of the online stage requests `--runner-resource-amount` (default 0.01)
of the custom resource `--runner-resource`, so Ray places them only on nodes that
declare it (`ray start --resources '{"worker_node": 1}'`; cluster/local_cluster.sh
gives every worker node `worker_node` and a per-node `node_w<i>`). After the online
algorithm is built and after every online iteration, the driver asks each live
EnvRunner for its node id and PID and appends them to RUN_DIR/placement.json
(with the driver's own node id), which is how tests/test_cluster.py checks the
placement and the restart of a killed EnvRunner. Every entry also names the Python
environment (sys.prefix) of the driver and of each EnvRunner.

EnvRunners are placed with the pipeline's own `custom_resources_per_env_runner`, and the
recording is an RLlib callback class the pipeline is told to run (`online_callbacks:
cluster.placement_job:PlacementRecorder`), both passed as `rllib-o2o run` options. Everything
else is `rllib-o2o run` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Under `ray job submit --working-dir .` the repo root is the cwd but not on sys.path; with it there the
# driver imports this file as `cluster.placement_job` too, which is how the pipeline finds PlacementRecorder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.rllib.callbacks.callbacks import RLlibCallback  # noqa: E402


def _runner_info(runner) -> dict:
    import ray

    return {"worker_index": runner.worker_index, "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(), "python_prefix": sys.prefix}


def record_placement(event: str, algorithm) -> None:
    """Appends the live EnvRunners' node ids and pids (and the driver's) to RUN_DIR/placement.json,
    RUN_DIR being the parent of the online stage's directory (the algorithm's log_dir)."""
    import ray

    path = Path(algorithm.config.log_dir).parent / "placement.json"
    driver_node = ray.get_runtime_context().get_node_id()
    group = algorithm.env_runner_group
    asked_at = time.time()  # before the runners answer: a runner killed after this cannot be listed
    runners = group.foreach_env_runner(_runner_info, local_env_runner=False)
    entries = json.loads(path.read_text()) if path.exists() else []
    entries.append({"event": event, "time": time.time(), "asked_at": asked_at, "driver_node_id": driver_node,
                    "driver_python_prefix": sys.prefix,
                    "env_steps": getattr(algorithm, "env_steps_sampled", 0),
                    "num_healthy_runners": group.num_healthy_remote_workers(),
                    "num_runners": group.num_remote_workers(), "runners": runners})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, path)
    print(f"placement ({event}): EnvRunners {[(r['worker_index'], r['node_id'][:8], r['pid']) for r in runners]}"
          f", driver on {driver_node[:8]}", flush=True)


class PlacementRecorder(RLlibCallback):
    """Records the EnvRunners' placement after the online algorithm is built and after every iteration."""

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        record_placement("online_algorithm_init", algorithm)

    def on_train_result(self, *, algorithm, **kwargs) -> None:
        record_placement("online_train_result", algorithm)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runner-resource", default="worker_node")
    parser.add_argument("--runner-resource-amount", type=float, default=0.01)
    parser.add_argument("--out")
    ours, rest = parser.parse_known_args(argv)
    if ours.out is None:
        parser.error("--out is required (placement.json is written there)")

    from rllib_o2o.cli import main as cli_main

    Path(ours.out).mkdir(parents=True, exist_ok=True)
    resources = json.dumps({ours.runner_resource: ours.runner_resource_amount})
    return cli_main(["run", "--out", ours.out, "--custom-resources-per-env-runner", resources,
                     "--online-callbacks", "cluster.placement_job:PlacementRecorder", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
