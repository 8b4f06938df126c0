"""How noisy a score of 5 or 10 evaluation episodes is: the final policies of a bench, re-evaluated.

For each finished online stage of a bench directory (DATASET/seedK/online[-METHOD]),
the final policy is exported (`rllib_o2o.export_policy`) and run for `--episodes`
episodes of its mean action (episode i reset with seed `--seed` + i). Printed per run:
the mean normalised score and the standard error of a 5- and a 10-episode mean
(per-episode std / sqrt(n)); per (dataset, method): their means over seeds. A dip
or a final score read off one evaluation is uncertain by about that much.

    python experiments/evaluation_noise.py runs/bench-medium --episodes 20 --json noise.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLE_SIZES = (5, 10)


def online_stages(bench_dir: Path):
    """(dataset, seed, method, run dir) of every online stage with a DONE.json."""
    for done in sorted(bench_dir.glob("*/seed*/online*/DONE.json")):
        stage = done.parent
        method = "aca" if stage.name == "online" else stage.name[len("online-"):]
        yield stage.parent.parent.name, int(stage.parent.name[len("seed"):]), method, stage.parent


def main(argv=None) -> dict:
    from rllib_o2o.data.scores import normalized_score
    from rllib_o2o.export import evaluate, export_policy, load_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.episodes < max(SAMPLE_SIZES):
        parser.error(f"--episodes must be >= {max(SAMPLE_SIZES)}")

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, seed, method, run_dir in online_stages(args.bench_dir):
            if args.methods and method not in args.methods:
                continue
            out = Path(tmp) / f"{dataset}-{seed}-{method}"
            export_policy(run_dir, out, stage="online", method=method)
            result = evaluate(load_policy(out), episodes=args.episodes, seed=args.seed)
            if result["reference_scores"] is None:
                raise SystemExit(f"{run_dir}: no reference scores for {result['env_id']}, so no normalised score")
            scores = normalized_score(result["returns"], *result["reference_scores"]).tolist()
            sd = statistics.stdev(scores)
            row = {"dataset": dataset, "seed": seed, "method": method, "scores": scores,
                   "mean": statistics.fmean(scores), "episode_std": sd,
                   **{f"stderr_{n}": sd / math.sqrt(n) for n in SAMPLE_SIZES},
                   **{f"mean_first_{n}": statistics.fmean(scores[:n]) for n in SAMPLE_SIZES}}
            runs.append(row)
            print(f"{dataset} seed {seed} {method}: mean {row['mean']:.1f} over {args.episodes}, per-episode std "
                  f"{sd:.1f}, standard error of a 5-episode score {row['stderr_5']:.1f}, of a 10-episode score "
                  f"{row['stderr_10']:.1f}", flush=True)
    groups = {}
    for row in runs:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    summary = [{"dataset": d, "method": m, "seeds": len(rows),
                **{k: statistics.fmean(r[k] for r in rows) for k in ("episode_std", "stderr_5", "stderr_10")}}
               for (d, m), rows in sorted(groups.items())]
    for s in summary:
        print(f"{s['dataset']} {s['method']} ({s['seeds']} seeds): per-episode std {s['episode_std']:.1f}, "
              f"standard error at 5 episodes {s['stderr_5']:.1f}, at 10 {s['stderr_10']:.1f}")
    out = {"command": " ".join(sys.argv), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "machine": f"{platform.machine()}, python {platform.python_version()}", "settings": vars(args) | {
               "bench_dir": str(args.bench_dir), "json": str(args.json)}, "runs": runs, "summary": summary}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
