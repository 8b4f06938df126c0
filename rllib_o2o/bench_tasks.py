"""The benchmark's units as Ray tasks: each stage of each run once, in dependency order, side by side.

A (dataset, seed) pair is one run directory; its methods share its offline and alignment stages.
`plan_tasks` makes one task per stage still to do: a shared stage once for all the methods that
need it, each method's online stage after the stages it starts from. `run_tasks` submits each
once the tasks it needs are done, with its own resource request (`unit_cpus`, `unit_gpus`); Ray starts each when
its inputs are done and a node has the resources (its placement group), so a cluster runs as many
at once as it has room for, and a laptop as many as it has cores. Ready tasks are submitted longest
chain first (`priorities`): a long pre-training that gates an online stage does not queue behind
short stages, which on a busy cluster would add its whole length to the benchmark's wall time. A
task runs its stage alone (`pipeline.run_stage`, holding that stage's lock), so stages of one run
directory run side by side too.

A task whose process dies (killed, out of memory, its node lost) is retried by Ray up to
`max_retries` times and resumes its stage from the last checkpoint. A task that raises is not
retried (a retry would raise again); its dependants are skipped, the other tasks go on, and the
benchmark ends with a BenchmarkError listing what failed. Re-running the benchmark resumes it:
done stages are not planned again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rllib_o2o.checkpoints import write_json_atomic
from rllib_o2o.methods import Variants, get_method
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import BENCH_TASKS_FILE, DONE_FILE, bench_task_file_name, stage_name

ROLES = ("offline", "alignment", "online")


class BenchmarkError(RuntimeError):
    """Some of the benchmark's tasks failed (the others ran to the end)."""


class BenchmarkInterrupted(KeyboardInterrupt):
    """The benchmark was interrupted (Ctrl-C): its running tasks were stopped, each keeping its stage's last
    checkpoint. `rows`: every task's row, the finished ones' and the others' (status "interrupted" or
    "not started")."""

    def __init__(self, rows: list[dict]):
        super().__init__("interrupted")
        self.rows = rows


@dataclass(frozen=True)
class StageTask:
    """One stage of one run directory, and the stages (their keys) it starts from."""

    dataset: str
    seed: int
    run_dir: Path
    role: str  # "offline", "alignment" or "online"
    stage: str  # its directory in run_dir
    method: str  # the method it runs for (a shared stage: the first method that needs it)
    needs: tuple[tuple[Path, str], ...]  # keys of the tasks that must end first

    @property
    def key(self) -> tuple[Path, str]:
        return self.run_dir, self.stage

    @property
    def record_path(self) -> Path:
        return self.run_dir / bench_task_file_name(self.stage)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{bench_task_file_name(self.stage).removesuffix('.json')}.log"


def plan_tasks(out: Path, datasets: list[str], seeds: list[int], methods: list[str],
               variants: Variants | None = None) -> list[StageTask]:
    """The stage tasks still to do, each after the tasks it needs (a done stage, or an online stage whose
    results file exists, is not planned; a later stage then does not wait for it). `variants`: the named
    variants `methods` may name (`PipelineConfig.variants`)."""
    tasks: dict[tuple[Path, str], StageTask] = {}
    for dataset in datasets:
        for seed in seeds:
            run = RunDir(Path(out) / dataset / f"seed{seed}")
            for method_name in methods:
                method, needs = get_method(method_name, variants), []
                roles = [r for r in ROLES if (r != "offline" or method.offline is not None)
                         and (r != "alignment" or method.start == "aligned")]
                for role in roles:
                    name = stage_name(method_name, role, variants)
                    done = (run.results_path(method_name).exists() if role == "online"
                            else (run.path / name / DONE_FILE).exists())
                    if done:
                        continue
                    key = (run.path, name)
                    if key not in tasks:
                        tasks[key] = StageTask(dataset, seed, run.path, role, name, method_name, tuple(needs))
                    needs.append(key)
    return list(tasks.values())


def stage_work(task: StageTask, values: dict) -> float:
    """A stage's work in critic-member evaluations per state of a batch, summed over its updates: a ranking
    for the scheduler (`priorities`), not a time. Offline: steps x critics x (1 + CQL's sampled actions per
    state); alignment: Z steps x critics; online: env steps x updates per env step x critics. On the paper
    profile this ranks the stages as their measured times do (benchmarks/unit_times.py) but for CQL's
    pre-training against rlpd's online stage, which it puts first (31 against 20; measured 16 h and 21 h)."""
    method = get_method(task.method, values.get("variants"))
    if task.role == "offline":
        kind = method.offline_kind()
        sampled = _cql_sampled_actions_per_state() if kind.update == "CQLUpdate" else 0
        return values["offline_steps"] * kind.num_critics * (1 + sampled)
    if task.role == "alignment":
        return values["align_steps"] * method.num_critics
    return values["online_steps"] * (values.get("utd") or method.updates_per_env_step) * method.num_critics


@functools.cache
def _cql_sampled_actions_per_state() -> int:
    """CQL(H)'s actions per batch state: N uniform, N from pi at s, N from pi at s' (CQLUpdate)."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    return 3 * O2OSACConfig().cql_num_actions


def priorities(tasks: list[StageTask], work: dict[tuple[Path, str], float]) -> dict[tuple[Path, str], float]:
    """Each task's bottom level: its work plus the largest bottom level of the tasks that need it, the
    longest chain from its start to the benchmark's end. Submitting the highest first is list scheduling's
    critical-path rule (Graham's bound holds for any order; this one keeps the long chains' starts early)."""
    dependants: dict[tuple[Path, str], list[tuple[Path, str]]] = {task.key: [] for task in tasks}
    for task in tasks:
        for need in task.needs:
            dependants[need].append(task.key)
    level: dict[tuple[Path, str], float] = {}
    for task in reversed(tasks):  # plan_tasks lists a task after its needs
        level[task.key] = work[task.key] + max((level[key] for key in dependants[task.key]), default=0.0)
    return level


def run_stage_task(values: dict, role: str, record_path: str, log_path: str) -> dict:
    """The body of one Ray task: records this attempt (node, pid) beside the run, then runs the stage with
    its output in `log_path`."""
    import ray

    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.pipeline import run_stage

    record_file = Path(record_path)
    record = _read_json(record_file) or {"attempts": []}
    attempt = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
               "pid": os.getpid(), "started": time.time()}
    record["attempts"].append(attempt)
    write_json_atomic(record_file, record)
    start = time.perf_counter()
    _ray_data_in_current_placement_group()
    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_stage(PipelineConfig.from_dict(values), role)
    attempt.update(ended=time.time(), seconds=time.perf_counter() - start)
    write_json_atomic(record_file, record)
    return {"node_id": attempt["node_id"], "pid": attempt["pid"], "attempts": len(record["attempts"]),
            "seconds": attempt["seconds"], "final_score": summary.get("final_score") if role == "online" else None}


def _ray_data_in_current_placement_group() -> None:
    """Ray Data's tasks of this process (the offline stage's reads) in the task's placement group: Ray Data
    schedules them with a strategy of its own, so the group's capture of child tasks misses them, and
    outside it they would wait forever for a CPU once the stage tasks held them all."""
    import ray
    import ray.data
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = ray.util.get_current_placement_group()
    if group is None:
        return
    context = ray.data.DataContext.get_current()
    context.scheduling_strategy = context.scheduling_strategy_large_args = PlacementGroupSchedulingStrategy(
        group, placement_group_capture_child_tasks=True)


def run_tasks(tasks: list[StageTask], values_of, *, unit_cpus: float = 1, unit_gpus: float = 0,
              max_retries: int = 3, runner_cpus: float = 0) -> list[dict]:
    """Runs every task (its pipeline values: `values_of(task)`) once the tasks it needs are done, each in a
    placement group of its own (`unit_cpus`, `unit_gpus`) that also holds the Ray tasks it starts (Ray Data's
    reads, the alignment task): a stage task whose children asked for CPUs of their own would wait forever
    once the stage tasks held every CPU. Prints each as it ends; returns one row per task (where it ran, its
    attempts, its status, `submitted`: its place in the submission order). A task whose needs failed is not
    run (status "skipped"). `runner_cpus`: the CPUs of the online stage's EnvRunners, added to its group
    (they are the task's children too). Ready tasks are submitted highest `priorities` first (their
    `stage_work`), and Ray grants the groups in that order. Ctrl-C stops the running tasks and raises
    BenchmarkInterrupted with every task's row."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    remote = ray.remote(run_stage_task)
    level = priorities(tasks, {task.key: stage_work(task, values_of(task)) for task in tasks})
    waiting, running = sorted(tasks, key=lambda task: -level[task.key]), {}
    done: set[tuple[Path, str]] = set()
    failed: set[tuple[Path, str]] = set()
    total, rows, start, submitted = len(tasks), [], time.perf_counter(), 0
    print(f"bench: {total} stage tasks, each in a placement group of {unit_cpus:g} CPU{'s' if unit_cpus != 1 else ''}"
          f"{f' and {unit_gpus:g} GPU' if unit_gpus else ''}; each task's output in its run directory, "
          f"{bench_task_file_name('<stage>').removesuffix('.json')}.log", flush=True)

    def report(task: StageTask, row: dict, where: str) -> None:
        rows.append(row)
        print(f"[bench {len(rows)}/{total}] {task.dataset} seed {task.seed} {task.stage}: {row['status']} ({where}; "
              f"{time.perf_counter() - start:.0f}s elapsed)", flush=True)

    def submit(task: StageTask) -> None:
        nonlocal submitted
        task.run_dir.mkdir(parents=True, exist_ok=True)
        bundle, task_gpus = task_resources(task, unit_cpus, unit_gpus, runner_cpus)
        group = placement_group([bundle])
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
        ref = remote.options(num_cpus=0, num_gpus=task_gpus, max_retries=max_retries, retry_exceptions=False,
                             scheduling_strategy=strategy).remote(
            values_of(task), task.role, str(task.record_path), str(task.log_path))
        running[ref] = (task, group, submitted)
        submitted += 1

    def collect(ready) -> None:
        task, group, order = running.pop(ready)
        row = {**_row(task), "submitted": order}
        try:
            row.update(ray.get(ready), status="done")
            done.add(task.key)
            where = f"node {row['node_id'][:8]}, attempt {row['attempts']}, {row['seconds']:.0f}s"
        except Exception as err:  # a RayTaskError wraps the task's own
            failed.add(task.key)
            row.update(status="failed", error=f"{type(err).__name__}: {_first_line(err)}",
                       attempts=_attempts(task))
            where = row["error"]
        finally:
            remove_placement_group(group)
        report(task, row, where)

    try:
        while waiting or running:
            for task in list(waiting):  # every need is a planned task (plan_tasks)
                if any(key in failed for key in task.needs):
                    waiting.remove(task)
                    failed.add(task.key)
                    report(task, {**_row(task), "submitted": None, "status": "skipped", "attempts": 0,
                                  "error": "a stage it needs failed"}, "a stage it needs failed")
                elif all(key in done for key in task.needs):
                    waiting.remove(task)
                    submit(task)
            if running:
                (ready,), _ = ray.wait(list(running), num_returns=1)
                collect(ready)
    except KeyboardInterrupt:  # Ctrl-C: stop the running tasks (each keeps its last checkpoint), say what ran
        for ref, (task, group, order) in running.items():
            ray.cancel(ref, force=True)
            remove_placement_group(group)
            rows.append({**_row(task), "submitted": order, "status": "interrupted", "attempts": _attempts(task)})
        rows.extend({**_row(task), "submitted": None, "status": "not started", "attempts": 0} for task in waiting)
        raise BenchmarkInterrupted(rows) from None
    return rows


def task_resources(task: StageTask, unit_cpus: float, unit_gpus: float, runner_cpus: float) -> tuple[dict, float]:
    """A stage task's placement-group bundle and the GPUs the task itself holds in it. The task holds no
    CPU: its bundle's CPUs go to whatever does the work, itself or its children (Ray Data's reads, the
    EnvRunners, the alignment task). It holds the bundle's GPUs where the learner runs in its process
    (offline, online); the alignment stage fits Z in a task of its own, which takes them instead (with
    `stage_resources`' align_num_gpus), or it would wait forever on a GPU its parent holds."""
    cpus = unit_cpus + (runner_cpus if task.role == "online" else 0)
    bundle = {"CPU": cpus, **({"GPU": unit_gpus} if unit_gpus else {})}
    return bundle, 0 if task.role == "alignment" else unit_gpus


def stage_resources(values: dict, overrides: dict, unit_cpus: float, unit_gpus: float) -> dict:
    """The pipeline values that size a stage to its task's bundle (`task_resources`): torch's threads (under
    "auto": the bundle's CPUs), the alignment task's CPUs and GPUs (the bundle's: more would never be
    granted inside it) and the learner's GPU share. An override that asks for more than the bundle holds
    is an error, not a benchmark that hangs."""
    sized = {"align_num_cpus": unit_cpus, "align_num_gpus": unit_gpus, "num_gpus_per_learner": unit_gpus}
    for key, limit in sized.items():
        if key in overrides and overrides[key] > limit:
            unit = "--unit-gpus" if "gpus" in key else "--unit-cpus"
            raise ValueError(f"{key}={overrides[key]:g} asks for more than a benchmark stage task holds "
                             f"({unit} {limit:g}); raise {unit} instead")
    values = {**values, **{key: overrides.get(key, limit) for key, limit in sized.items()}}
    if values.get("torch_threads", "auto") == "auto":
        values["torch_threads"] = max(1, int(unit_cpus))
    return values


def _row(task: StageTask) -> dict:
    return {"dataset": task.dataset, "seed": task.seed, "stage": task.stage, "role": task.role, "method": task.method,
            "run_dir": str(task.run_dir)}


def write_task_summary(out: Path, rows: list[dict]) -> Path:
    """BENCH_TASKS_FILE in the benchmark directory: this invocation's tasks (a re-run replaces it)."""
    path = Path(out) / BENCH_TASKS_FILE
    write_json_atomic(path, {"tasks": rows})
    return path


def raise_if_failed(rows: list[dict]) -> None:
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        lines = "\n".join(f"  {r['dataset']} seed {r['seed']} {r['stage']}: {r['error']}" for r in failed)
        raise BenchmarkError(f"{len(failed)} of {len(rows)} stage tasks failed (re-run the same command to retry "
                             f"them; their output is in <run dir>/bench-task-<stage>.log):\n{lines}")


def _attempts(task: StageTask) -> int:
    """How many times Ray started the task (its record's attempts)."""
    return len((_read_json(task.record_path) or {}).get("attempts", []))


def _first_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # a RayTaskError's: the task's own exception
    text = str(cause if cause is not None else err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
