"""Do two benchmark directories hold the same learning curves? For a refactor that must not change behaviour.

    python benchmarks/same_curves.py RUNS_A RUNS_B [--json OUT]

For every results file of A (`<dataset>/seed<k>/results*.json`, as `rllib-o2o bench` writes them) and
its namesake in B, the largest absolute difference of the offline curve's returns, of the alignment's
z_loss curve and of every number of every online evaluation point (returns and the learner's
diagnostics); prints one line per run and the largest of all, and with --json writes them. Exit status
1 when B lacks a run of A or a curve's length differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def largest_difference(points_a: list[dict], points_b: list[dict]) -> float:
    """max |a - b| over the numeric fields the points share; inf when the curves differ in length."""
    if len(points_a) != len(points_b):
        return math.inf
    diffs = [abs(a[k] - b[k]) for a, b in zip(points_a, points_b) for k in a
             if isinstance(a[k], (int, float)) and isinstance(b.get(k), (int, float))]
    return max(diffs, default=0.0)


def compare(dir_a: Path, dir_b: Path) -> dict:
    runs = {}
    for file_a in sorted(dir_a.glob("*/seed*/results*.json")):
        name = str(file_a.relative_to(dir_a))
        file_b = dir_b / name
        if not file_b.exists():
            runs[name] = {"missing_in_b": True}
            continue
        a, b = json.loads(file_a.read_text()), json.loads(file_b.read_text())
        runs[name] = {
            "offline": largest_difference((a["offline"] or {}).get("curve", []), (b["offline"] or {}).get("curve", [])),
            "z_loss": largest_difference((a["alignment"] or {}).get("z_loss_curve", []),
                                         (b["alignment"] or {}).get("z_loss_curve", [])),
            "online": largest_difference(a["online"]["curve"], b["online"]["curve"]),
        }
    worst = max((v for r in runs.values() for k, v in r.items() if k != "missing_in_b"), default=0.0)
    return {"a": str(dir_a), "b": str(dir_b), "runs": runs, "largest_difference": worst,
            "complete": all("missing_in_b" not in r for r in runs.values()) and math.isfinite(worst)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = compare(args.a, args.b)
    for name, diffs in result["runs"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in diffs.items()))
    print(f"largest difference: {result['largest_difference']:.3g} over {len(result['runs'])} runs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
