"""A trusted peer on the same rows: d3rlpy 2.8's IQL on a committed dataset, scored as the project scores.

    /path/to/d3rlpy-venv/bin/python experiments/d3rlpy_peer.py datasets/hopper-medium --seed 0 \
        --steps 50000 --eval-every 5000 --json experiments/results/d3rlpy_iql_hopper_seed0.json

Runs in its own environment (d3rlpy 2.8, torch, gymnasium[mujoco], pyarrow; never the project's):
d3rlpy is not a dependency. It reads the dataset's Parquet files, trains d3rlpy's IQL with its D4RL
reproduction settings (expectile 0.7, weight temperature 3, weights clipped at 100, rewards scaled
by 1000 / return range, Adam 3e-4, batch 256), and every --eval-every updates scores the greedy
policy over --episodes episodes started from the project's evaluation seeds (episode i of a run
seeded s from reset(seed=10000 (s + 1) + i)), so its curve sits beside `benchmarks/offline_stages.py`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def load(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(table, name):
        values = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(values.type):
            return values.flatten().to_numpy().reshape(len(values), values.type.list_size)
        return values.to_numpy(zero_copy_only=False)

    meta = json.loads((path / "dataset.json").read_text())
    tables = [pq.read_table(f) for f in sorted(path.glob("part-*.parquet"))]
    cols = {name: np.concatenate([column(t, name) for t in tables])
            for name in ("obs", "actions", "rewards", "terminateds", "truncateds")}
    return meta, cols


def evaluate(algo, env_id: str, seed: int, episodes: int) -> float:
    import gymnasium as gym

    env, returns = gym.make(env_id), []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 * (seed + 1) + i)
        done, total = False, 0.0
        while not done:
            action = algo.predict(np.asarray(obs, np.float32)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import d3rlpy
    import torch

    torch.set_num_threads(1)
    meta, cols = load(Path(args.dataset))
    low, high = np.asarray(meta["action_low"], np.float32), np.asarray(meta["action_high"], np.float32)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=cols["obs"].astype(np.float32),
        actions=((cols["actions"] - low) / (high - low) * 2.0 - 1.0).astype(np.float32),
        rewards=cols["rewards"].astype(np.float32),
        terminals=cols["terminateds"].astype(np.float32),
        timeouts=(cols["truncateds"] & ~cols["terminateds"]).astype(np.float32),
    )
    d3rlpy.seed(args.seed)
    algo = d3rlpy.algos.IQLConfig(
        actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, weight_temp=3.0, max_weight=100.0,
        expectile=0.7, reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
    ).create(device="cpu:0")
    ref_min, ref_max = meta["ref_min_score"], meta["ref_max_score"]
    curve, start = [], time.perf_counter()
    for epoch, _ in algo.fitter(dataset, n_steps=args.steps, n_steps_per_epoch=args.eval_every, show_progress=False,
                                save_interval=10**9, experiment_name=f"peer_{Path(args.dataset).name}_{args.seed}"):
        ret = evaluate(algo, meta["env_id"], args.seed, args.episodes)
        score = 100.0 * (ret - ref_min) / (ref_max - ref_min)
        curve.append({"updates": epoch * args.eval_every, "return": ret, "score": score})
        print(f"{epoch * args.eval_every} updates: score {score:.1f}", flush=True)
    row = {"peer": "d3rlpy 2.8 IQL", "dataset": Path(args.dataset).name, "seed": args.seed, "curve": curve,
           "seconds": time.perf_counter() - start}
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
