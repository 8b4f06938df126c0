"""Gradient-update cost of each kind of stage in the `paper` profile, and the profile's wall time from it.

Each kind is the real learner path (`O2OSAC._learn(U)`: flat-replay sample + `o2o_update`) on
Hopper-v5 or HalfCheetah-v5 shapes (MLPs 256x256, batch 256), one torch thread, in this process:

* sac: twin critics, one critic + actor + temperature step per update (every UTD-1 online stage);
* cql: sac with CQL(H)'s penalty (cql-sac's and balanced-replay's offline stage);
* cql-ensemble: CQL with 10 layer-normalised critics (wsrl's offline stage);
* wsrl-env-step: 4 critic updates of the 10 layer-normalised critics and one actor step (wsrl online);
* rlpd-env-step: 20 critic updates and one actor step, half-offline batches (rlpd online).

The estimate adds, per (dataset, seed) of the profile: its offline stages (500k updates each), its
alignments (100k Z steps at the rate given), and 100k env steps of each method's online stage
(updates at these rates + `--env-ms` per env step for sampling and evaluation). On U parallel
units the wall time lies between max(W / U, C) and W / U + C (Graham's bound for list scheduling
with dependencies), W the task-hours of all runs and C the critical path: the longest chain of
stages, each after the stages it needs (`bench_tasks.plan_tasks`). Within those bounds it replays
the benchmark's scheduler on U slots (`simulated_wall_hours`): longest chain first, as `rllib-o2o
bench` submits, and in the plan's order, as it did before. It prints one JSON object.

    python benchmarks/unit_times.py --json benchmarks/results/unit_times_2026-12-03.json
    python benchmarks/unit_times.py --from-json benchmarks/results/unit_times_2026-12-03.json  # re-estimate only
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

KINDS = {  # name: (update class, num_critics, critic_target_members, layer_norm, updates per env step)
    "sac": ("SACUpdate", 2, None, False, 1),
    "cql": ("CQLUpdate", 2, None, False, 1),
    "cql-ensemble": ("CQLUpdate", 10, 2, True, 1),
    "wsrl-env-step": ("WSRLUpdate", 10, 2, True, 4),
    "rlpd-env-step": ("RLPDUpdate", 10, 2, True, 20),
}
ENVS = {"Hopper-v5": (11, 3), "HalfCheetah-v5": (17, 6)}


def ms_per_env_step(env_id: str, kind: str, updates: int, repeats: int) -> float:
    """Milliseconds of learner work per env step (per update for the offline kinds), best of `repeats`."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
    from rllib_o2o.algorithms.o2o_sac import updates as update_classes

    name, members, target_members, layer_norm, utd = KINDS[kind]
    update = getattr(update_classes, name)
    algo = (O2OSACConfig().environment(env_id)
            .o2o(update=update, num_critics=members, critic_target_members=target_members,
                 critic_layer_norm=layer_norm, policy_update_interval=utd, actor_q_reduction="mean"
                 if kind.startswith("rlpd") else "min", replay_capacity=20_000, torch_threads=1)
            .training(train_batch_size_per_learner=256).debugging(seed=0)).build_algo()
    try:
        obs_dim, act_dim = ENVS[env_id]
        rng = np.random.default_rng(0)

        def rows(n):
            return (rng.normal(size=(n, obs_dim)).astype(np.float32), rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                    rng.normal(size=n).astype(np.float32), rng.normal(size=(n, obs_dim)).astype(np.float32),
                    np.zeros(n, np.float32))

        if update.offline_batch_fraction:
            algo.replay.add_protected(*rows(10_000))
        algo.replay.add(*rows(10_000))
        num = updates - updates % utd
        algo._learn(utd * 5)  # warm-up: allocations, first Adam steps
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            algo._learn(num)
            best = min(best, time.perf_counter() - start)
        result = 1000.0 * best / num * utd
        print(f"{env_id} {kind}: {result:.1f} ms per {'env step' if utd > 1 else 'update'}", file=sys.stderr,
              flush=True)
        return result
    finally:
        algo.stop()


def critical_path_hours(tasks: list, hours: dict) -> tuple[float, list[str]]:
    """The longest chain through the plan: each task's finish is its hours (`hours[task.stage]`) after the
    latest finish of the tasks it needs (`plan_tasks` lists a task after its needs). Returns the chain's
    hours and its stages, first to last."""
    finish: dict = {}
    before: dict = {}
    for task in tasks:
        need = max(task.needs, key=lambda key: finish[key], default=None)
        finish[task.key] = hours[task.stage] + (finish[need] if need is not None else 0.0)
        before[task.key] = need
    if not finish:
        return 0.0, []
    key = max(finish, key=finish.get)
    end, chain = finish[key], []
    while key is not None:
        chain.append(key[1])
        key = before[key]
    return end, chain[::-1]


def simulated_wall_hours(tasks: list, hours: dict, units: int, order: list) -> float:
    """`bench_tasks.run_tasks` replayed on `units` one-CPU slots with these stage hours: a task is submitted
    once its needs are done (tasks ready together in `order`'s order), and Ray grants the slots in
    submission order; returns the hours until the last task ends."""
    import heapq

    waiting = [task for task in order if task in tasks]
    queue: list = []  # submitted, not started
    running: list = []  # (end, n, task)
    done: set = set()
    now, started = 0.0, 0
    while waiting or queue or running:
        for task in list(waiting):
            if all(key in done for key in task.needs):
                waiting.remove(task)
                queue.append(task)
        while queue and len(running) < units:
            task = queue.pop(0)
            heapq.heappush(running, (now + hours[task.stage], started, task))
            started += 1
        now, _, task = heapq.heappop(running)
        done.add(task.key)
    return now


def estimate(ms: dict, env_ms: float, z_steps_per_s: float, units: int) -> dict:
    """Hours of the `paper` profile (per dataset and seed, and in total on `units` parallel stage tasks)."""
    from rllib_o2o.bench_profiles import PROFILES
    from rllib_o2o.bench_tasks import plan_tasks, priorities, stage_work

    profile = PROFILES["paper"]
    offline_updates, align_steps = profile.pipeline["offline_steps"], profile.pipeline["align_steps"]
    online_steps = profile.pipeline["online_steps"]
    tasks = plan_tasks(Path("/nonexistent"), ["hopper-medium"], [0], list(profile.methods))
    hours = {}
    for task in tasks:
        if task.role == "offline":
            kind = {"offline": "sac", "offline-cql": "cql", "offline-cql-ensemble": "cql-ensemble"}[task.stage]
            seconds = offline_updates * ms[kind] / 1000.0
        elif task.role == "alignment":
            seconds = align_steps / z_steps_per_s
        else:
            kind = {"wsrl": "wsrl-env-step", "rlpd": "rlpd-env-step"}.get(task.method, "sac")
            seconds = online_steps * (ms[kind] + env_ms) / 1000.0
        hours[task.stage] = seconds / 3600.0
    per_run = sum(hours.values())
    runs = len(profile.datasets) * len(profile.seeds)
    chain_hours, chain = critical_path_hours(tasks, hours)  # every run's plan is the same
    total = per_run * runs
    every = plan_tasks(Path("/nonexistent"), list(profile.datasets), list(profile.seeds), list(profile.methods))
    level = priorities(every, {t.key: stage_work(t, profile.pipeline) for t in every})
    by_priority = sorted(every, key=lambda t: -level[t.key])  # what run_tasks submits first
    return {"stage_hours_per_run": hours, "hours_per_run": per_run, "runs": runs, "total_task_hours": total,
            "parallel_units": units, "critical_path_hours": chain_hours, "critical_path": chain,
            "wall_hours_at_least": max(total / units, chain_hours), "wall_hours_at_most": total / units + chain_hours,
            "simulated_wall_hours": simulated_wall_hours(every, hours, units, by_priority),
            "simulated_wall_hours_in_plan_order": simulated_wall_hours(every, hours, units, every)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200, help="updates timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env-ms", type=float, default=3.0,
                        help="ms per online env step for sampling and evaluation (docs/benchmarks.md: ~1.3 ms "
                             "sampling + evaluation at 10 episodes per 1k steps)")
    parser.add_argument("--z-steps-per-s", type=float, default=183.0, help="alignment Z-fit steps/s (measured)")
    parser.add_argument("--units", type=int, nargs="+", default=[1, 16, 32, 64, 128, 256],
                        help="parallel stage tasks of the cluster to estimate for")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS),
                        help="time only these kinds (an A/B of one kernel); the estimate needs them all")
    parser.add_argument("--from-json", type=Path,
                        help="take the unit times (and machine, date) measured in this earlier output instead of "
                             "timing them again; the estimate is redone with this code and these options")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    timing = {"updates": args.updates, "repeats": args.repeats, "kinds": args.kinds}
    if args.from_json:
        measured = json.loads(args.from_json.read_text())
        ms, machine, date = measured["ms_per_update_or_env_step"], measured["machine"], measured["date"]
        timing = {k: measured.get("settings", {}).get(k) for k in timing} | {"from_json": str(args.from_json)}
    else:
        ms, machine, date = measure(args.updates, args.repeats, args.kinds)
    out = {"machine": machine, "date": date, "ms_per_update_or_env_step": ms}
    if all(kind in ms[env] for env in ENVS for kind in KINDS):
        slowest = {kind: max(ms[env][kind] for env in ENVS) for kind in KINDS}
        out["estimates"] = {str(u): estimate(slowest, args.env_ms, args.z_steps_per_s, u) for u in args.units}
    out["settings"] = timing | {"env_ms": args.env_ms, "z_steps_per_s": args.z_steps_per_s, "units": args.units}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def measure(updates: int, repeats: int, kinds: list[str]) -> tuple[dict, str, str]:
    """The kinds' unit times on both envs, in this process (one torch thread), with the machine and date."""
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ms = {env: {kind: ms_per_env_step(env, kind, updates, repeats) for kind in kinds} for env in ENVS}
    finally:
        ray.shutdown()
    machine = f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread"
    return ms, machine, time.strftime("%Y-%m-%d")


if __name__ == "__main__":
    main()
