"""`rllib-o2o report`: the comparison table (Markdown) and learning-curve plots of a benchmark.

Per dataset and method, over seeds: offline score (online step 0), dip (lowest
normalised score in the first 10% of online steps), final score, mean of the
last 10% of evaluations, the area under the curve (time-averaged normalised
score over the online budget) and CORL's regret (mean over the evaluations of
1 - score / 100), each as mean +- std with a 95% t-interval. With one seed there
is no spread: std and the interval are None in JSON and n/a in the table.

Runs of one dataset name trained on different rows (their results' dataset fingerprints, or else their
data's mean scores, differ, as datasets generated on different machines can) are refused, not averaged.

Per method across datasets: the interquartile mean of the final scores and of the
regrets of all its runs, with a 95% stratified-bootstrap interval (strata: datasets;
rllib_o2o/stats.py).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from rllib_o2o.data.fingerprint import DATASET_FINGERPRINT
from rllib_o2o.methods import DEFAULT_METHOD, FORMER_NAMES
from rllib_o2o.stats import regret, stratified_bootstrap_interval

# Two-sided 95% Student-t critical values by degrees of freedom (1..30); the normal value beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
METRICS = ("offline", "dip", "final", "last10", "auc", "regret")
METRIC_TITLES = {"offline": "offline (step 0)", "dip": "dip (first 10%)", "final": "final",
                 "last10": "last 10% mean", "auc": "AUC", "regret": "regret"}
ACROSS_DATASETS = ("final", "regret")  # the figures aggregated per method over every dataset and seed


def run_metrics(curve: list[dict], online_steps: int) -> dict[str, float]:
    """The figures of one run from its evaluation curve [{env_steps, score}, ...]."""
    from rllib_o2o.stages.online import dip

    steps = [p["env_steps"] for p in curve]
    scores = [p["score"] for p in curve]
    late = [s for x, s in zip(steps, scores) if x >= 0.9 * online_steps] or scores[-1:]
    area = sum((x1 - x0) * (s0 + s1) / 2 for x0, x1, s0, s1 in zip(steps, steps[1:], scores, scores[1:]))
    span = steps[-1] - steps[0]
    return {"offline": scores[0], "dip": dip(curve, online_steps), "final": scores[-1], "last10": statistics.fmean(late),
            "auc": area / span if span > 0 else scores[0], "regret": regret(scores)}


def summarize(values: list[float]) -> dict[str, float | None]:
    """mean, sample std and 95% t-interval half-width; std and ci95 are None for one value (undefined)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": n}
    std = statistics.stdev(values)
    t = _T95[n - 2] if n <= len(_T95) + 1 else 1.96
    return {"mean": mean, "std": std, "ci95": t * std / math.sqrt(n), "n": n}


def format_cell(summary: dict, digits: int = 1) -> str:
    """'mean ± std', or 'mean ± n/a' when one seed gives no spread."""
    spread = "n/a" if summary["std"] is None else f"{summary['std']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {spread}"


def load_runs(bench_dir: str | Path) -> list[dict]:
    """Every results[-<method>].json below `bench_dir` (a benchmark or a single run directory)."""
    runs = []
    for path in sorted(Path(bench_dir).rglob("results*.json")):
        results = json.loads(path.read_text())
        if "online" not in results or not results["online"]["curve"]:
            continue
        curve = results["online"]["curve"]
        if any(p["score"] is None for p in curve):
            raise ValueError(f"{path}: evaluations without a normalised score (no reference scores for "
                             f"{results.get('env_id')}); set ref_min_score/ref_max_score")
        dataset = path.parent.parent.name if path.parent.name.startswith("seed") else Path(results["dataset"]).name
        online_steps = max(p["env_steps"] for p in curve)
        runs.append({"path": str(path), "dataset": dataset, "method": method_name(results),
                     "seed": results.get("seed", 0), "offline_data_online": results.get("offline_data_online"),
                     DATASET_FINGERPRINT: results.get(DATASET_FINGERPRINT),
                     "dataset_score": results.get("dataset_score"),
                     "curve": curve, **run_metrics(curve, online_steps)})
    if not runs:
        raise ValueError(f"{bench_dir}: no results*.json with evaluations found")
    check_one_dataset_per_name(runs)
    return runs


def method_name(results: dict) -> str:
    """The catalogue's name today of the method a results file records (its former name, if renamed)."""
    name = results.get("method", DEFAULT_METHOD)
    return FORMER_NAMES.get(name, name)


def check_one_dataset_per_name(runs: list[dict]) -> None:
    """ValueError when the runs of one dataset name were trained on different data, naming each set and
    one of its results files: their content fingerprints differ or, for results written before the
    fingerprint was recorded, their data's mean scores do (to 6 decimals). Runs without either pass."""
    for dataset in sorted({r["dataset"] for r in runs}):
        for field, label in ((DATASET_FINGERPRINT, "fingerprint"), ("dataset_score", "mean data score")):
            paths_by_value: dict[str | float, list[str]] = {}
            for run in runs:
                value = run[field]
                if run["dataset"] == dataset and value is not None:
                    key = round(value, 6) if isinstance(value, float) else value
                    paths_by_value.setdefault(key, []).append(run["path"])
            if len(paths_by_value) > 1:
                sets = "; ".join(f"{label} {value}: {len(paths)} run(s), e.g. {paths[0]}"
                                 for value, paths in sorted(paths_by_value.items()))
                raise ValueError(f"{dataset}: its runs were trained on different data ({sets}); report each "
                                 "set apart, or give the datasets different names")


def aggregate(runs: list[dict]) -> dict[tuple[str, str], dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["method"]), []).append(run)
    return {key: {m: summarize([r[m] for r in group]) for m in METRICS}
            | {"seeds": sorted(r["seed"] for r in group), "offline_data_online": data_setting(group)}
            for key, group in sorted(groups.items())}


def data_setting(runs: list[dict]) -> bool | None:
    """Whether the runs kept offline data in their online replay buffer: True, False, or None when their
    results do not say (written before the field existed) or disagree."""
    settings = {r.get("offline_data_online") for r in runs}
    return settings.pop() if len(settings) == 1 else None


def across_datasets(runs: list[dict], reps: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Per method: for each of ACROSS_DATASETS, the IQM over all its runs with a 95% stratified-bootstrap
    interval (runs resampled within each dataset), and the datasets and number of runs it covers."""
    result = {}
    for method in sorted({r["method"] for r in runs}):
        by_dataset: dict[str, list[dict]] = {}
        for run in runs:
            if run["method"] == method:
                by_dataset.setdefault(run["dataset"], []).append(run)
        row = {"datasets": sorted(by_dataset), "runs": sum(len(group) for group in by_dataset.values())}
        for metric in ACROSS_DATASETS:
            iqm, low, high = stratified_bootstrap_interval(
                {dataset: [r[metric] for r in group] for dataset, group in by_dataset.items()}, reps=reps, seed=seed)
            row[metric] = {"iqm": iqm, "low": low, "high": high}
        result[method] = row
    return result


def markdown_across_datasets(rows: dict[str, dict]) -> str:
    lines = ["| method | datasets | runs | final IQM [95% interval] | regret IQM [95% interval] |",
             "|---|---|---|---|---|"]
    for method, row in rows.items():
        final, reg = row["final"], row["regret"]
        lines.append(f"| {method} | {', '.join(row['datasets'])} | {row['runs']} | "
                     f"{final['iqm']:.1f} [{final['low']:.1f}, {final['high']:.1f}] | "
                     f"{reg['iqm']:.3f} [{reg['low']:.3f}, {reg['high']:.3f}] |")
    lines.append("")
    lines.append("Interquartile mean over every run of the method (all datasets and seeds), 95% percentile "
                 "interval of a bootstrap that resamples seeds within each dataset. Compare methods on the same "
                 "datasets only.")
    return "\n".join(lines)


def markdown_table(table: dict[tuple[str, str], dict]) -> str:
    lines = ["| dataset | method | seeds | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " | offline data online |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    setting = {True: "yes", False: "no", None: "?"}
    for (dataset, method), row in table.items():
        cells = [format_cell(row[m], 3 if m == "regret" else 1) for m in METRICS]
        lines.append(f"| {dataset} | {method} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {setting[row['offline_data_online']]} |")
    lines.append("")
    lines.append("Normalised scores (100 = the dataset's reference max), mean ± std over seeds "
                 "(n/a with one seed). 95% t-interval half-widths are in report.json. Offline data online: "
                 "whether the online stage kept offline rows in its replay buffer (no: ACA's setting, where the "
                 "offline data is not needed online; ?: results written before this was recorded).")
    return "\n".join(lines)


def plot_curves(runs: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per dataset: mean normalised score vs online steps per method, shaded +- std across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset in sorted({r["dataset"] for r in runs}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method in sorted({r["method"] for r in runs if r["dataset"] == dataset}):
            curves = [r["curve"] for r in runs if r["dataset"] == dataset and r["method"] == method]
            steps = sorted({p["env_steps"] for c in curves for p in c})
            by_step = [[p["score"] for c in curves for p in c if p["env_steps"] == x] for x in steps]
            mean = [statistics.fmean(v) for v in by_step]
            std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_step]
            line, = ax.plot(steps, mean, label=f"{method} (n={len(curves)})",
                            linewidth=2.2 if method == DEFAULT_METHOD else 1.3)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(dataset)
        ax.set_xlabel("online environment steps")
        ax.set_ylabel("normalised score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = out_dir / f"{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_across_datasets(rows: dict[str, dict], out_dir: Path) -> Path:
    """across-datasets.png: per method, the IQM of its final scores and of its regrets over all datasets and
    seeds, with their 95% stratified-bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rows)
    fig, axes = plt.subplots(1, len(ACROSS_DATASETS), figsize=(10, 0.45 * len(methods) + 1.6), sharey=True)
    for ax, metric in zip(axes, ACROSS_DATASETS):
        iqm = [rows[m][metric]["iqm"] for m in methods]
        errors = [[v - rows[m][metric]["low"] for m, v in zip(methods, iqm)],
                  [rows[m][metric]["high"] - v for m, v in zip(methods, iqm)]]
        ax.errorbar(iqm, range(len(methods)), xerr=errors, fmt="o", capsize=4)
        ax.set_title(f"{METRIC_TITLES[metric]} (IQM, 95% interval)")
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(methods)), methods)
    axes[0].invert_yaxis()
    fig.tight_layout()
    path = out_dir / "across-datasets.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(bench_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Writes report.md, report.json, one PNG per dataset and across-datasets.png; returns report.md's path."""
    from rllib_o2o.checkpoints import write_json_atomic

    runs = load_runs(bench_dir)
    out = Path(out_dir) if out_dir else Path(bench_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(runs)
    overall = across_datasets(runs)
    plots = plot_curves(runs, out) + [plot_across_datasets(overall, out)]
    text = "\n".join([f"# O2O comparison: {bench_dir}", "", markdown_table(table), "",
                      "## Across datasets", "", markdown_across_datasets(overall), ""]
                     + [f"![{p.stem}]({p.name})" for p in plots]) + "\n"
    (out / "report.md").write_text(text)
    write_json_atomic(out / "report.json", {
        "table": [{"dataset": d, "method": m, **row} for (d, m), row in table.items()],
        "across_datasets": overall,
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs]})
    return out / "report.md"
