"""The O2O comparison: methods x datasets x seeds through the pipeline, resumable.

Layout under the benchmark directory:
    <out>/<dataset>/seed<k>/           one pipeline run directory per dataset and seed:
        offline/, offline-cql/, alignment/   stages shared by the methods that need them
        online[-<method>]/, results[-<method>].json
    <out>/bench.json                   the profile and settings the benchmark was started with

A run whose results file exists is never redone; an interrupted one resumes
from its last checkpoint (the pipeline's own resume), so re-running the same
command after a crash finishes the benchmark. With a storage path each run is
also kept in <storage>/<dataset>/seed<k> (the pipeline's storage_path).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rllib_o2o.bench_profiles import Profile, get_profile, split_dataset_name
from rllib_o2o.checkpoints import write_json_atomic
from rllib_o2o.methods import get_method


def run_benchmark(profile_name: str, out: str | Path, data_dir: str | Path, *, datasets: list[str] | None = None,
                  methods: list[str] | None = None, seeds: list[int] | None = None, overrides: dict | None = None,
                  dataset_paths: dict[str, str] | None = None, num_env_runners: int = 0,
                  collect_overrides: dict | None = None, storage_path: str | None = None) -> list[Path]:
    """Runs every (dataset, seed, method) not yet done; returns the results files."""
    from rllib_o2o.pipeline import PipelineConfig, run_pipeline
    from rllib_o2o.rundir.layout import RunDir

    profile = get_profile(profile_name)
    if collect_overrides:
        profile = replace(profile, collect={**profile.collect, **collect_overrides})
    datasets = list(datasets or profile.datasets)
    methods = list(methods or profile.methods)
    seeds = list(profile.seeds if seeds is None else seeds)
    for name in methods:
        get_method(name)
    for name in datasets:
        split_dataset_name(name)
    pipeline_values = {**profile.pipeline, **(overrides or {}), "num_env_runners": num_env_runners}
    PipelineConfig.from_dict(pipeline_values).validate()  # fail on a bad override before any training
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
    done_files, total = [], len(datasets) * len(seeds) * len(methods)
    start = time.perf_counter()
    for name in datasets:
        env_id, _ = split_dataset_name(name)
        for seed in seeds:
            run_dir = out / name / f"seed{seed}"
            for method in methods:
                target = RunDir(run_dir).results_path(method)
                index = len(done_files) + 1
                if target.exists():
                    print(f"[bench {index}/{total}] {name} seed {seed} {method}: done, skipped", flush=True)
                else:
                    print(f"[bench {index}/{total}] {name} seed {seed} {method} "
                          f"({time.perf_counter() - start:.0f}s elapsed)", flush=True)
                    # Run dirs of different datasets share their name (seed<k>): one storage prefix each.
                    storage = f"{storage_path.rstrip('/')}/{name}" if storage_path else None
                    cfg = PipelineConfig.from_dict({**pipeline_values, "dataset": str(paths[name]), "env": env_id,
                                                    "out": str(run_dir), "seed": seed, "method": method,
                                                    "storage_path": storage})
                    run_pipeline(cfg)
                done_files.append(target)
    print(f"benchmark complete: {len(done_files)} runs in {out}", flush=True)
    return done_files


def resolve_datasets(profile: Profile, datasets: list[str], data_dir: str | Path,
                     dataset_paths: dict[str, str], torch_threads: int | str = "auto") -> dict[str, Path]:
    """Given paths (dataset dirs, D4RL HDF5 files, Minari ids) or datasets generated with `collect`.

    Generated datasets are cached by content and settings under `data_dir`: made once per machine.
    """
    from rllib_o2o.stages.collect import CollectSettings, collect, dataset_dir

    resolved = {}
    for name in datasets:
        if name in dataset_paths:
            resolved[name] = _import_given(name, dataset_paths[name], Path(data_dir))
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
