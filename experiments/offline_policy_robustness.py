"""Is an offline policy's score robust, or does any small change of its actions lose it?

    python experiments/offline_policy_robustness.py RUN_DIR [RUN_DIR ...] [--json OUT]

For each run directory of `rllib-o2o bench` (DATASET/seedK), the offline stage's policy is exported and
scored (normalised, mean action) on the bench's 10 evaluation start states (reset seed 10_000 * (K + 1)),
on 10 and on 30 other start states, and with Gaussian noise of a few standard deviations added to its
mean action on the bench's start states. If noise as large as the online stage's first mean-action
shift (`mean_action_shift` in the online curve) keeps the score, a fall after that shift is the
direction the online updates chose, not a policy that any change breaks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISE_STDS = (0.03, 0.07, 0.1)


class NoisyMeanAction:
    """The policy's mean action plus N(0, std^2) per dimension, clipped to [-1, 1]; seeded."""

    def __init__(self, policy, std: float, seed: int):
        self.policy, self.std, self.rng = policy, std, np.random.default_rng(seed)

    def __call__(self, obs):
        action = self.policy(obs)
        return np.clip(action + self.rng.normal(0.0, self.std, action.shape).astype(np.float32), -1.0, 1.0)


def robustness(run_dir: Path) -> dict:
    from rllib_o2o.data.rollouts import evaluate_policy
    from rllib_o2o.data.scores import normalized_score
    from rllib_o2o.export import evaluate, export_policy, load_policy

    seed = int(json.loads((run_dir / "config.json").read_text())["seed"])
    bench_states = 10_000 * (seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        export_policy(run_dir, Path(tmp) / "policy", stage="offline")
        policy = load_policy(Path(tmp) / "policy")
    row = {"bench_start_states": evaluate(policy, episodes=10, seed=bench_states)["score"],
           "other_10_start_states": evaluate(policy, episodes=10, seed=777)["score"],
           "other_30_start_states": evaluate(policy, episodes=30, seed=12_345)["score"]}
    for std in NOISE_STDS:
        returns = evaluate_policy(policy.spec.env_id, NoisyMeanAction(policy, std, seed=0), 10, bench_states,
                                  policy.spec.max_episode_steps, num_envs=1)
        row[f"noise_std_{std}"] = normalized_score(float(returns.mean()), *policy.spec.reference_scores)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {}
    for run_dir in args.runs:
        results[str(run_dir)] = row = robustness(run_dir)
        print(run_dir, " ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
