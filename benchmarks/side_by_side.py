"""Benchmark directories side by side, run by run: how each run keeps its start and where it ends.

    python benchmarks/side_by_side.py last-actor=docs/results/medium-amd \
        last-actor=docs/results/last-actor-walker2d moving-average=docs/results/ema-handover \
        [--method aca] [--json FILE]

For each (dataset, seed) and each directory: the offline score (online step 0), the lowest
evaluation in the first 25% of the online steps, the lowest over the whole run, the final score as
the mean of the last three evaluations, and the regret (`rllib-o2o report`'s). A label may name
several directories; without --method each method is a column of its own. Per dataset and
column: the means over seeds, and how many runs keep their start (lowest in the first 25% at
least offline - 5; lowest over the run at least offline - 10). Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.report import check_one_dataset_per_name, load_runs  # noqa: E402

EARLY = 0.25  # the share of the online steps whose lowest evaluation measures the hand-over
LAST = 3  # evaluations averaged into the final score
KEEP_EARLY, KEEP_RUN = 5.0, 10.0  # the points a run may lose under its start, early and over the run


def keep_metrics(curve: list[dict]) -> dict[str, float]:
    """offline, lowest in the first EARLY of the steps, lowest over the run, mean of the LAST evaluations."""
    steps = max(p["env_steps"] for p in curve)
    online = [p for p in curve if p["env_steps"] > 0]
    early = [p["score"] for p in online if p["env_steps"] <= EARLY * steps]
    return {"offline": curve[0]["score"], "lowest_early": min(early), "lowest": min(p["score"] for p in online),
            "final": statistics.fmean(p["score"] for p in curve[-LAST:])}


def rows(dirs: list[tuple[str, str]], method: str | None) -> dict[tuple[str, int, str], dict]:
    """(dataset, seed, column) -> the run's keep metrics and regret; the column is the directory's label,
    followed by the method's name unless `method` picks one. A label may name several directories. Runs of
    one dataset name trained on different rows are refused, across directories as within one (`report`'s check)."""
    labelled = [(label, run) for label, directory in dirs for run in load_runs(directory)
                if method is None or run["method"] == method]
    check_one_dataset_per_name([run for _, run in labelled])
    return {(run["dataset"], run["seed"], label if method else f"{label} {run['method']}"):
            {**keep_metrics(run["curve"]), "regret": run["regret"]} for label, run in labelled}


def keeps(row: dict) -> tuple[bool, bool]:
    return row["lowest_early"] >= row["offline"] - KEEP_EARLY, row["lowest"] >= row["offline"] - KEEP_RUN


def tables(table: dict, labels: list[str]) -> str:
    lines = ["| dataset | seed | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for dataset, seed in sorted({(d, s) for d, s, _ in table}):
        cells = []
        for label in labels:
            r = table.get((dataset, seed, label))
            cells.append("-" if r is None else f"{r['offline']:.1f} / {r['lowest_early']:.1f} / {r['lowest']:.1f} / "
                                               f"{r['final']:.1f} / {r['regret']:.3f}")
        lines.append(f"| {dataset} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", "| dataset | directory | runs | offline | lowest, first 25% | lowest | final | regret | "
                  "keeps early | keeps over the run |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dataset in sorted({d for d, _, _ in table}):
        for label in labels:
            runs = [r for (d, _, lab), r in table.items() if d == dataset and lab == label]
            if not runs:
                continue
            mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
            early, whole = (sum(flags) for flags in zip(*map(keeps, runs)))
            lines.append(f"| {dataset} | {label} | {len(runs)} | {mean['offline']:.1f} | {mean['lowest_early']:.1f} | "
                         f"{mean['lowest']:.1f} | {mean['final']:.1f} | {mean['regret']:.3f} | {early}/{len(runs)} | "
                         f"{whole}/{len(runs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="LABEL=DIR", help="benchmark directories, each with its label")
    parser.add_argument("--method", help="only this method's runs (default: every method)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    table = rows([tuple(item.split("=", 1)) for item in args.dirs], args.method)
    print("Per run: offline / lowest in the first 25% / lowest / final (mean of the last 3) / regret")
    print(tables(table, list(dict.fromkeys(column for _, _, column in table))))
    if args.json:
        Path(args.json).write_text(json.dumps([{"dataset": d, "seed": s, "directory": lab, **r}
                                               for (d, s, lab), r in sorted(table.items())], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
