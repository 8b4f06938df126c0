"""The O2O comparison: methods x datasets x seeds through the pipeline, resumable.

Layout under the benchmark directory:
    <out>/<dataset>/seed<k>/           one pipeline run directory per dataset and seed:
        offline/, offline-cql/, alignment/   stages shared by the methods that need them
        online[-<method>]/, results[-<method>].json
    <out>/bench.json                   the profile and settings the benchmark was started with

    <out>/bench-tasks.json             where each stage task of the last invocation ran, its attempts
    <run dir>/bench-task-<stage>.json, .log   each task's attempts (node, pid) and its output

Every stage of every run is a Ray task with its own resources (`bench_tasks`): the shared stages
once, each method's online stage after them, as many at once as the cluster (or this machine's
cores) has room for; the driver may join a cluster (`ray job submit`, RAY_ADDRESS). On a cluster
the benchmark and data directories must be on storage every node sees (a shared filesystem), or
give a storage path. A run whose results file exists is never redone; an interrupted one resumes
from its last checkpoint (the stage's own resume), so re-running the same command after a crash
finishes the benchmark. With a storage path each run is also kept in <storage>/<dataset>/seed<k>
(the pipeline's storage_path).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rllib_o2o.bench_profiles import COMMITTED_DATASETS_DIR, Profile, get_profile, split_dataset_name
from rllib_o2o.bench_tasks import (BenchmarkInterrupted, StageTask, plan_tasks, raise_if_failed, run_tasks,
                                   stage_resources, write_task_summary)
from rllib_o2o.checkpoints import write_json_atomic
from rllib_o2o.methods import get_method


def run_benchmark(profile_name: str, out: str | Path, data_dir: str | Path, *, datasets: list[str] | None = None,
                  methods: list[str] | None = None, seeds: list[int] | None = None, overrides: dict | None = None,
                  dataset_paths: dict[str, str] | None = None, num_env_runners: int = 0,
                  collect_overrides: dict | None = None, storage_path: str | None = None, unit_cpus: float = 1,
                  unit_gpus: float = 0, max_retries: int = 3) -> list[Path]:
    """Runs every (dataset, seed, method) not yet done as Ray tasks (`bench_tasks`) on the Ray this process
    is connected to; returns the results files. `unit_cpus`, `unit_gpus`: each stage task's resources;
    `max_retries`: Ray's retries of a task whose process died."""
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.rundir.layout import RunDir

    profile = get_profile(profile_name)
    if collect_overrides:
        profile = replace(profile, collect={**profile.collect, **collect_overrides})
    datasets = list(datasets or profile.datasets)
    methods = list(methods or profile.methods)
    seeds = list(profile.seeds if seeds is None else seeds)
    variants = (overrides or {}).get("variants")
    for name in methods:
        get_method(name, variants)
    for name in datasets:
        split_dataset_name(name)
    pipeline_values = {**profile.pipeline, **(overrides or {}), "num_env_runners": num_env_runners}
    task_values = stage_resources(pipeline_values, overrides or {}, unit_cpus, unit_gpus)
    PipelineConfig.from_dict(task_values).validate()  # fail on a bad override before any training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Seeds may run as separate invocations into one directory (e.g. in parallel): record their union.
    previous = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
    recorded_seeds = sorted(set(previous.get("seeds", [])) | set(seeds))
    write_json_atomic(out / "bench.json", {"profile": profile_name, "datasets": datasets, "methods": methods,
                                           "seeds": recorded_seeds, "pipeline": pipeline_values, "collect": profile.collect,
                                           "dataset_paths": dataset_paths or {}})
    paths = resolve_datasets(profile, datasets, data_dir, dataset_paths or {},
                             torch_threads=pipeline_values.get("torch_threads", "auto"))
    tasks = plan_tasks(out, datasets, seeds, methods, variants)

    def values_of(task: StageTask) -> dict:
        env_id, _ = split_dataset_name(task.dataset)
        # Run dirs of different datasets share their name (seed<k>): one storage prefix each.
        storage = f"{storage_path.rstrip('/')}/{task.dataset}" if storage_path else None
        return {**task_values, "dataset": str(paths[task.dataset]), "env": env_id, "out": str(task.run_dir),
                "seed": task.seed, "method": task.method, "storage_path": storage}

    total = len(datasets) * len(seeds) * len(methods)
    print(f"benchmark: {total} runs ({len(datasets)} datasets x {len(seeds)} seeds x {len(methods)} methods), "
          f"{sum(t.role == 'online' for t in tasks)} to run", flush=True)
    try:
        rows = run_tasks(tasks, values_of, unit_cpus=unit_cpus, unit_gpus=unit_gpus, max_retries=max_retries,
                         runner_cpus=num_env_runners)
    except BenchmarkInterrupted as interrupted:
        write_task_summary(out, interrupted.rows)
        raise
    write_task_summary(out, rows)
    raise_if_failed(rows)
    done_files = [RunDir(out / name / f"seed{seed}").results_path(method)
                  for name in datasets for seed in seeds for method in methods]
    print(f"benchmark complete: {len(done_files)} runs in {out}", flush=True)
    return done_files


def resolve_datasets(profile: Profile, datasets: list[str], data_dir: str | Path,
                     dataset_paths: dict[str, str], torch_threads: int | str = "auto",
                     committed_dir: Path = COMMITTED_DATASETS_DIR) -> dict[str, Path]:
    """Given paths (dataset dirs, D4RL HDF5 files, Minari ids), the repository's committed datasets (a
    profile with `committed_data`: never generated) or datasets generated with `collect`.

    Generated datasets are cached by content and settings under `data_dir`: made once per machine.
    """
    from rllib_o2o.data.fingerprint import content_fingerprint
    from rllib_o2o.data.schema import read_dataset
    from rllib_o2o.stages.collect import CollectSettings, collect, dataset_dir

    resolved = {}
    for name in datasets:
        if name in dataset_paths:
            resolved[name] = _import_given(name, dataset_paths[name], Path(data_dir))
        elif profile.committed_data:
            path = committed_dir / name
            if not (path / "dataset.json").exists():
                raise ValueError(f"{name}: the profile's committed dataset {path} is missing (a checkout of the "
                                 f"repository has it); give the rows to use with --dataset-path {name}=PATH")
            resolved[name] = path
            print(f"{name}: committed rows {path} (fingerprint {content_fingerprint(read_dataset(path)[0])})", flush=True)
    wanted: dict[str, list[str]] = {}
    for name in datasets:
        if name not in resolved:
            env_id, kind = split_dataset_name(name)
            wanted.setdefault(env_id, []).append(kind)
    for env_id, kinds in wanted.items():
        settings = CollectSettings(env_id=env_id, kinds=tuple(sorted(kinds)), **profile.collect)
        print(f"datasets for {env_id} {sorted(kinds)}: generating or reusing under {data_dir}", flush=True)
        collect(settings, data_dir, torch_threads=torch_threads)
    for name in datasets:
        resolved.setdefault(name, dataset_dir(data_dir, *split_dataset_name(name)))
    return resolved


def _import_given(name: str, source: str, data_dir: Path) -> Path:
    """A given dataset dir, D4RL file, Minari id or URI, resolved as `rllib-o2o run --dataset` does."""
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.context import resolve_dataset
    from rllib_o2o.rundir.layout import RunDir

    env_id, _ = split_dataset_name(name)
    return resolve_dataset(PipelineConfig(dataset=source, env=env_id), RunDir(data_dir / "given" / name))
