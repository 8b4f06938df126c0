"""The ACA-collapse ablation table: every method's evaluation curve and online diagnostics side by side.

    python benchmarks/ablation.py runs/probe-hopper [--json docs/results/ablation.json]

Reads the results[-<method>].json files of a benchmark directory (one or more seeds) and prints,
per dataset and method, the mean normalised score over seeds at each evaluation and, at the
evaluations named by --at, the diagnostics the online stage records: KL(pi || pi0) on batch
states, the mean action's shift from pi0's, the norm of the critic's first-layer action rows,
the critic's TD error (RMS) and the temperature. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.report import load_runs  # noqa: E402

DIAGNOSTICS = {"kl_to_reference": "KL(pi‖pi0)", "mean_action_shift": "Δ mean action",
               "critic_action_weight_norm": "‖W_a‖", "td_error_rms": "TD rms", "alpha": "alpha"}


def mean_over_seeds(runs: list[dict], steps: int, key: str) -> float | None:
    values = [p[key] for r in runs for p in r["curve"] if p["env_steps"] == steps and p.get(key) is not None]
    return statistics.fmean(values) if values else None


def tables(bench_dir: str, at: list[int]) -> tuple[str, dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in load_runs(bench_dir):
        groups.setdefault((run["dataset"], run["method"]), []).append(run)
    steps = sorted({p["env_steps"] for runs in groups.values() for r in runs for p in r["curve"]})
    lines = ["| dataset | method | seeds | " + " | ".join(f"{s // 1000}k" if s else "0" for s in steps)
             + " | lowest in first 10% |", "|---|---|---|" + "---|" * (len(steps) + 1)]
    raw = {}
    for (dataset, method), runs in sorted(groups.items()):
        scores = [mean_over_seeds(runs, s, "score") for s in steps]
        dip = statistics.fmean(r["dip"] for r in runs)
        lines.append(f"| {dataset} | {method} | {len(runs)} | "
                     + " | ".join("" if v is None else f"{v:.1f}" for v in scores) + f" | {dip:.1f} |")
        raw[f"{dataset}/{method}"] = {"seeds": sorted(r["seed"] for r in runs), "steps": steps, "score": scores,
                                      "dip": dip, "diagnostics": {
                                          k: [mean_over_seeds(runs, s, k) for s in steps] for k in DIAGNOSTICS}}
    lines += ["", "| dataset | method | " + " | ".join(f"{DIAGNOSTICS[k]} @{s // 1000}k" for s in at
                                                      for k in DIAGNOSTICS) + " |",
              "|---|---|" + "---|" * (len(at) * len(DIAGNOSTICS))]
    for (dataset, method), runs in sorted(groups.items()):
        cells = [mean_over_seeds(runs, s, k) for s in at for k in DIAGNOSTICS]
        lines.append(f"| {dataset} | {method} | " + " | ".join("" if v is None else f"{v:.3g}" for v in cells) + " |")
    return "\n".join(lines), raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", help="benchmark directory (rllib-o2o bench --out)")
    parser.add_argument("--at", nargs="+", type=int, default=[1000, 3000], help="env steps of the diagnostics table")
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    text, raw = tables(args.bench_dir, args.at)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
