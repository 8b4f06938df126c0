"""Does a generated dataset depend on the CPU's instruction set? A probe of `rllib-o2o collect`'s numerics.

    python experiments/data_reproducibility.py --out DIR [--json OUT] [--variants NAME ...]

The `medium` datasets made by the same command and seed differ between an Intel and an AMD box
(docs/data.md). One machine cannot be another vendor's, but it can narrow its own instruction set: each
variant runs the same small `collect` (Hopper-v5, a short behaviour SAC, 5k transitions, seed 0, one
torch thread) in a fresh process with environment variables that choose the libraries' code paths
(torch's kernels, MKL's, oneDNN's, numpy's), and prints the dataset's content fingerprint. Variants
that give the default's fingerprint do not touch the numerics; the `pinned-*` variants fix the
libraries' code paths, and agree with each other if the result no longer depends on the instruction
set this machine offers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# numpy 2.x's AVX-512 dispatch targets: with them off its kernels take the X86_V3 (AVX2) path
NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"
PINNED = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
VARIANTS = {
    "default": {},
    "default-again": {},
    "torch-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "numpy-no-avx512": {"NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512},
    "mkl-cnr-auto": {"MKL_CBWR": "AUTO"},
    "mkl-cnr-avx2": {"MKL_CBWR": "AVX2"},
    "mkl-cnr-avx512": {"MKL_CBWR": "AVX512"},
    "pinned": PINNED,
    "pinned-narrowed": {**PINNED, "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                        "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512},
}
COLLECT = ["--env", "Hopper-v5", "--kinds", "medium", "--num-transitions", "5000", "--train-env-steps", "6000",
           "--env-steps-per-iteration", "1000", "--random-warmup-steps", "2000", "--medium-target", "1000",
           "--seed", "0", "--torch-threads", "1"]


def run_variant(name: str, extra_env: dict, out: Path) -> dict:
    from rllib_o2o.data.validate import validate_dataset

    target = out / name
    env = {**os.environ, **extra_env}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rllib_o2o.cli", "collect", "--out", str(target), *COLLECT],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"env": extra_env, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "seconds": seconds}
    stats = validate_dataset(target / "hopper-medium")
    return {"env": extra_env, "fingerprint": stats.fingerprint, "return_mean": stats.return_mean,
            "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where the variants' datasets are written")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    for name in args.variants:
        results[name] = run_variant(name, VARIANTS[name], out)
        row = results[name]
        print(f"{name:18s} {row.get('fingerprint', row.get('error'))}  "
              f"return mean {row.get('return_mean', float('nan')):.3f}  "
              f"{row['seconds']:.0f} s", flush=True)
    if args.json:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        import numpy
        import torch

        Path(args.json).write_text(json.dumps({
            "cpu": cpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "numpy": numpy.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "collect": COLLECT, "variants": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
