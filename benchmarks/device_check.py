"""The learner on an accelerator: O2OSAC's update against the pure-torch reference on the same device.

Hopper-v5 sizes (obs 11, act 3, 256x256 MLPs, batch 256), one process. Per contender,
ms per update after a warm-up: the reference loop of benchmarks/reference_sac.py with its
networks and buffer on `--device`; the project's learner in `sac` and `aca` modes
through the real path (`O2OSAC._learn`: flat-replay sample, numpy batch moved to the
learner's device, updates), with the learner on the GPU (`num_gpus_per_learner=1`) when
`--device cuda`. The project never needs a GPU; `benchmarks/device_check.sh` runs this on
one and writes the JSON. `--device cpu` runs the same code here (a smoke test does).

`--compile` also times every contender with its update's losses under torch.compile
(`--compile-backend`, default inductor; `--compile-mode`, default "reduce-overhead", i.e. CUDA
graphs, on cuda and "default" on cpu): the learner through RLlib's `torch_compile_learner`, the
reference with `reference_sac.SAC(compile_backend=...)`. The warm-up includes the compilation.

    python benchmarks/device_check.py --device cuda --json device_check.json
    python benchmarks/device_check.py --device cuda --compile --json device_check.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks import reference_sac  # noqa: E402
from benchmarks.throughput import ACT_DIM, BATCH, ENV_ID, OBS_DIM, build_o2o, seed_replay  # noqa: E402
from rllib_o2o.algorithms.o2o_sac.updates import ACAUpdate, SACUpdate  # noqa: E402

UPDATES = {"sac": SACUpdate, "aca": ACAUpdate}  # the results' key prefix -> the learner's update class
MODES = tuple(UPDATES)


def learner_ms_per_update(mode: str, device: str, updates: int, warmup: int, rows: int, threads,
                          compile_backend: str | None = None, compile_mode: str | None = None) -> float:
    """ms per update of O2OSAC's `_learn` in `mode`, its learner on `device`, random Hopper rows replayed;
    with `compile_backend` its losses compiled (`torch_compile_learner`)."""
    from rllib_o2o.data.rollouts import collect_transitions, env_meta

    algo = build_o2o(UPDATES[mode], threads=threads, gpus_per_learner=1 if torch.device(device).type == "cuda" else 0,
                     compile_backend=compile_backend, compile_mode=compile_mode)
    try:
        seed_replay(algo, collect_transitions(ENV_ID, rows, seed=0), env_meta(ENV_ID))
        if mode == "aca":  # a frozen pi0 that differs from the actor
            algo._learn(max(1, warmup // 2))
            algo.call_learner(lambda l: l.module["default_policy"].unwrapped().freeze_reference_policy())
        algo._learn(warmup)  # its metrics come back as floats: every call ends with the device done
        start = time.perf_counter()
        algo._learn(updates)
        return (time.perf_counter() - start) * 1e3 / updates
    finally:
        algo.stop()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--updates", type=int, default=500, help="timed updates per contender")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rows", type=int, default=5_000, help="random Hopper transitions in the replay buffer")
    parser.add_argument("--threads", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="torch threads (auto: the project's default, the allocation)")
    parser.add_argument("--compile", action="store_true",
                        help="also time every contender with its losses under torch.compile")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (with --compile)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode (with --compile); default: reduce-overhead on cuda, default on cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.compile_mode is None:
        args.compile_mode = "reduce-overhead" if cuda else "default"
    variants = {"": (None, None)}  # key suffix -> (backend, mode)
    if args.compile:
        variants["_compiled"] = (args.compile_backend, args.compile_mode)

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": args.device, "device_name": torch.cuda.get_device_name() if args.device != "cpu" else
               platform.processor() or platform.machine(), "torch_version": torch.__version__,
               "ray_version": ray.__version__, "sizes": {"obs": OBS_DIM, "act": ACT_DIM, "batch": BATCH},
               "settings": {k: v for k, v in vars(args).items() if k != "json"}}
        for suffix, (backend, compile_mode) in variants.items():
            for mode in MODES:
                out[f"{mode}{suffix}_ms_per_update"] = learner_ms_per_update(
                    mode, args.device, args.updates, args.warmup, args.rows, args.threads, backend, compile_mode)
            out[f"reference{suffix}_ms_per_update"] = reference_sac.reference_ms_per_update(
                OBS_DIM, ACT_DIM, BATCH, num_updates=args.updates, warmup=args.warmup, device=args.device,
                compile_backend=backend, compile_mode=compile_mode)
            for mode in MODES:  # like for like: the compiled learner against the compiled reference
                out[f"{mode}{suffix}_ratio"] = (out[f"reference{suffix}_ms_per_update"]
                                                / out[f"{mode}{suffix}_ms_per_update"])
        if args.compile:  # eager time / compiled time of each contender
            for name in ("reference", *MODES):
                out[f"{name}_compile_speedup"] = out[f"{name}_ms_per_update"] / out[f"{name}_compiled_ms_per_update"]
    finally:
        ray.shutdown()
    for suffix in variants:
        for name in ("reference", *MODES):
            ratio = "" if name == "reference" else f" (ratio to the reference {out[f'{name}{suffix}_ratio']:.2f})"
            speedup = f", {out[f'{name}_compile_speedup']:.2f}x eager" if suffix else ""
            print(f"{name}{suffix} on {args.device}: {out[f'{name}{suffix}_ms_per_update']:.2f} ms/update"
                  f"{ratio}{speedup}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
