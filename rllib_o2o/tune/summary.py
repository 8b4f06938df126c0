"""The outcome of a tune experiment: per-trial final score and dip, and the best config by each."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rllib_o2o.tune.space import KNOBS

def summarize(results, online_steps: int, metric: str = "normalized_score") -> dict:
    """Per-trial final score and dip, and the best config by each."""
    trials = []
    for result in results:
        metrics = result.metrics or {}
        trials.append({
            "trial_id": metrics.get("trial_id") or Path(result.path).name,
            "config": {k: v for k, v in (result.config or {}).items() if k in KNOBS},
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "iterations": metrics.get("training_iteration", 0),
            "env_steps": metrics.get("env_steps", 0),
            "completed": metrics.get("env_steps", 0) >= online_steps,
            "final_score": metrics.get(metric),
            "dip": metrics.get("dip"),
            "score_at_0": metrics.get("score_at_0"),
            "restored_env_steps": metrics.get("restored_env_steps", 0),
            "path": result.path,
        })

    def best(key, pool):
        pool = [t for t in pool if t[key] is not None and not _is_nan(t[key])]
        return max(pool, key=lambda t: (t[key], t["final_score"] or -math.inf)) if pool else None

    completed = [t for t in trials if t["completed"]]
    return {
        "metric": metric,
        "num_trials": len(trials),
        "num_completed": len(completed),
        "num_errors": sum(t["error"] is not None for t in trials),
        "best_by_final_score": best("final_score", completed or trials),
        "best_by_dip": best("dip", completed or trials),
        "trials": trials,
    }


def _is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def summary_table(summary: dict) -> str:
    def fmt(x):
        return "n/a" if x is None or _is_nan(x) else f"{x:.1f}"

    lines = [f"{summary['num_trials']} trials ({summary['num_completed']} ran all {summary['online_steps']} "
             f"env steps, {summary['num_errors']} errors); {summary['metric']}:"]
    lines.append(f"  {'trial':<16} {'steps':>7} {'step 0':>7} {'dip':>7} {'final':>7}  config")
    for t in sorted(summary["trials"], key=lambda t: -(t["final_score"] or -math.inf)):
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["config"].items())
        lines.append(f"  {t['trial_id']:<16} {t['env_steps']:>7} {fmt(t['score_at_0']):>7} {fmt(t['dip']):>7} "
                     f"{fmt(t['final_score']):>7}  {cfg}{'  ERROR' if t['error'] else ''}")
    for label, key in (("best by final score", "best_by_final_score"), ("best by dip", "best_by_dip")):
        t = summary[key]
        if t:
            lines.append(f"{label}: {t['trial_id']} (final {fmt(t['final_score'])}, dip {fmt(t['dip'])}) "
                         f"{json.dumps(t['config'], sort_keys=True)}")
    lines.append(f"experiment: {summary['experiment']}")
    return "\n".join(lines)
