"""How steady and how strong each offline stage's last policy is: offline kinds and settling switches.

    python benchmarks/offline_stages.py --datasets benchmarks/datasets/hopper-medium \
        --variants sacml iql --seeds 0 1 2 --out runs/offline-stages [--json results.json]

Runs the pipeline's stage 1 (`stages.offline.train_offline`: RLlib's offline API, the product's
code) for every dataset x variant x seed, `--steps` updates each with an evaluation every
`--eval-every`, and prints per run the last score and the spread (max - min) of the last three
evaluations, for the raw actor and for its moving average (`--ema`, evaluated beside it in every
run: the average changes no update, so one run measures both), plus seconds per update. A variant
is one switch on top of an offline kind (VARIANTS); nothing else differs between variants: same
rows, seeds, budgets and evaluation start states. A finished run is never redone and an
interrupted one resumes from its last checkpoint, so re-running the same command finishes the
table. Each process runs its runs one after the other with one torch thread: start two
processes with disjoint --seeds (or --variants) to use two cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o.stages.offline import ACTOR_SCORE, ACTOR_VALUE_ESTIMATE, VALUE_ESTIMATE  # noqa: E402

# Each variant: the offline kind (`methods.OFFLINE_KINDS`) and the PipelineConfig values it changes.
VARIANTS = {
    "bc": ("sacml", {"alpha_bc": 0.0}),  # SAC+ML without its Q term: maximum likelihood of the data's actions
    "sacml": ("sacml", {}),
    "sacml-decay": ("sacml", {"offline_actor_lr_decay": True}),
    "sacml-floor": ("sacml", {"offline_min_alpha": 0.1}),  # its temperature kept at 0.1 or above
    "iql": ("iql", {}),
    "iql-decay": ("iql", {"offline_actor_lr_decay": True}),
    "cql": ("cql", {}),
    "cql-decay": ("cql", {"offline_actor_lr_decay": True}),
}
LAST = 3  # the evaluations whose spread measures how settled the last policy is


def run_one(dataset: Path, variant: str, seed: int, out: Path, args) -> dict:
    """Trains (or resumes, or reads) one offline stage; its DONE.json summary."""
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.console import Console
    from rllib_o2o.data.schema import read_meta
    from rllib_o2o.metrics_log import MetricsLog
    from rllib_o2o.rundir.stage import StageDir
    from rllib_o2o.stages.offline import train_offline

    kind, overrides = VARIANTS[variant]
    meta = read_meta(dataset)
    cfg = PipelineConfig(dataset=str(dataset), env=meta.env_id, out=str(out), seed=seed, torch_threads=1,
                         offline_steps=args.steps, offline_eval_every=args.eval_every,
                         eval_episodes=args.eval_episodes, offline_actor_ema=args.ema,
                         ref_min_score=meta.ref_min_score, ref_max_score=meta.ref_max_score, **overrides)
    cfg.validate()
    stage = StageDir(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog()
    try:
        return train_offline(cfg, dataset, meta, stage, Console(), metrics, kind)
    finally:
        metrics.close()


def last_points(curve: list[dict], key: str, value_key: str) -> dict:
    """The last score, and the spread and minimum of the last LAST evaluations, of `key`; and the score of
    the one of them the critic values most (`value_key`: an offline criterion's pick; None when the
    curve carries no value estimates)."""
    points = curve[-LAST:]
    values = [p[key] for p in points]
    picked = max(points, key=lambda p: p[value_key])[key] if all(value_key in p for p in points) else None
    return {"last": values[-1], "spread": max(values) - min(values), "min": min(values), "selected": picked}


def summarise(summary: dict, steps: int) -> dict:
    curve = summary["curve"]
    row = {"ema": last_points(curve, "score", VALUE_ESTIMATE), "curve": [p["score"] for p in curve],
           "seconds_per_update": summary["seconds"] / steps, "alpha_off": summary["alpha_off"]}
    if ACTOR_SCORE in curve[-1]:
        row["actor"] = last_points(curve, ACTOR_SCORE, ACTOR_VALUE_ESTIMATE)
        row["actor_curve"] = [p[ACTOR_SCORE] for p in curve]
    return row


def dataset_score(dataset: Path) -> float:
    """The data's mean episode, normalised."""
    from rllib_o2o.data.schema import read_episode_returns, read_meta
    from rllib_o2o.data.scores import normalized_score

    meta = read_meta(dataset)
    return float(normalized_score(read_episode_returns(dataset).mean(), meta.ref_min_score, meta.ref_max_score))


def table(rows: dict, data_scores: dict) -> str:
    lines = ["| dataset (data score) | variant | seed | actor: last / spread of last 3 | EMA: last / spread | "
             "curve of the actor (every eval) | s/update |", "|---|---|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        name, variant, seed = key.split("/")
        actor = row.get("actor", row["ema"])
        curve = row.get("actor_curve", row["curve"])
        lines.append(f"| {name} ({data_scores[name]:.1f}) | {variant} | {seed} | {actor['last']:.1f} / "
                     f"{actor['spread']:.1f} | {row['ema']['last']:.1f} / {row['ema']['spread']:.1f} | "
                     + " ".join(f"{v:.0f}" for v in curve) + f" | {row['seconds_per_update'] * 1000:.1f} ms |")
    return "\n".join(lines)


def summary_table(rows: dict, data_scores: dict) -> str:
    """Per dataset, variant and policy (the raw actor, its moving average) over seeds: the mean and the
    lowest last score, the largest spread of the last three, and how many seeds meet the targets
    (last >= the data's mean episode score, spread <= 10)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for key, row in rows.items():
        name, variant, _ = key.split("/")
        for policy in ("actor", "ema"):
            if policy in row:
                groups.setdefault((name, variant, policy), []).append(row[policy])
    lines = ["| dataset | variant | policy | seeds | mean last | lowest last | largest spread | seeds on target | "
             "picked by value: mean / lowest |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for (name, variant, policy), points in sorted(groups.items()):
        on_target = sum(p["last"] >= data_scores[name] and p["spread"] <= 10 for p in points)
        picked = [p["selected"] for p in points if p.get("selected") is not None]
        by_value = (f"{statistics.fmean(picked):.1f} / {min(picked):.1f}" if len(picked) == len(points)
                    else "-")  # runs from before the value estimate was recorded
        lines.append(f"| {name} | {variant} | {'moving average' if policy == 'ema' else 'last actor'} | "
                     f"{len(points)} | {statistics.fmean(p['last'] for p in points):.1f} | "
                     f"{min(p['last'] for p in points):.1f} | {max(p['spread'] for p in points):.1f} | "
                     f"{on_target}/{len(points)} | {by_value} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", required=True, help="dataset directories")
    parser.add_argument("--variants", nargs="+", default=["sacml"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000, help="offline updates per run")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--ema", type=float, default=5e-4, help="rate of the actor's moving average")
    parser.add_argument("--out", required=True, help="directory of the runs (resumable)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: the table of the runs of --out that have finished")
    args = parser.parse_args(argv)

    from rllib_o2o.ray_start import init_ray

    import ray

    init_ray(quiet=True)
    rows, data_scores = {}, {}
    try:
        for dataset in map(Path, args.datasets):
            data_scores[dataset.name] = dataset_score(dataset)
            for variant in args.variants:
                for seed in args.seeds:
                    done = Path(args.out) / dataset.name / variant / f"seed{seed}" / "DONE.json"
                    if args.report_only and not done.exists():
                        continue
                    summary = run_one(dataset, variant, seed, Path(args.out) / dataset.name / variant / f"seed{seed}",
                                      args)
                    rows[f"{dataset.name}/{variant}/{seed}"] = summarise(summary, args.steps)
                    if args.json:  # after every run: a killed process keeps what finished
                        Path(args.json).write_text(json.dumps({"data_scores": data_scores, "runs": rows}, indent=1))
    finally:
        ray.shutdown()
    print(table(rows, data_scores))
    print()
    print(summary_table(rows, data_scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
