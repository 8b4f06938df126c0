"""Share of the online stage's wall time that evaluation takes: RLlib's evaluation against the batched one.

The online stage's own config (`stages.online.online_config`: UTD 1, `--eval-every`
env steps per iteration, `--episodes` evaluation episodes of the mean action) on an
env whose episodes all run to the time limit (HalfCheetah-v5: 1000 steps whatever the
policy), so the evaluation's cost does not depend on how good the random-init policy
is. Per contender and iteration: the seconds of `algo.train()` without evaluation
and of `algo.evaluate()`; the share is evaluate / (train + evaluate) over the timed
iterations (the first, with the learning-starts warm-up, is not timed).

    python benchmarks/evaluation_share.py --json eval_share.json            # ~6 min on 2 cores
    python benchmarks/evaluation_share.py --env Hopper-v5 --iterations 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONTENDERS = ("rllib", "batched")


def measure(contender: str, args) -> dict:
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.online import online_config

    cfg = PipelineConfig(env=args.env, seed=0, eval_every=args.eval_every, eval_episodes=args.episodes,
                         num_env_runners=0, torch_threads=args.threads, method="sac-scratch")
    config = online_config(cfg, get_preset("medium")).evaluation(evaluation_interval=None)
    if contender == "rllib":
        config.evaluation(custom_evaluation_function=None)
    algo = config.build_algo()
    try:
        train_s, eval_s, returns = [], [], []
        for i in range(args.iterations + 1):
            start = time.perf_counter()
            algo.train()
            trained = time.perf_counter()
            result = algo.evaluate()
            evaluated = time.perf_counter()
            if i:  # the first iteration holds the learning-starts warm-up
                train_s.append(trained - start)
                eval_s.append(evaluated - trained)
                returns.append(result["env_runners"]["episode_return_mean"])
    finally:
        algo.stop()
    return {"train_s": train_s, "evaluate_s": eval_s, "eval_share": sum(eval_s) / (sum(train_s) + sum(eval_s)),
            "returns": returns}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (the paper's 10)")
    parser.add_argument("--eval-every", type=int, default=1_000, help="online env steps per iteration")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per contender")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = {"command": " ".join(sys.argv), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
               "settings": vars(args), "contenders": {}}
        for name in args.contenders:
            out["contenders"][name] = r = measure(name, args)
            print(f"{name}: evaluation {sum(r['evaluate_s']) / len(r['evaluate_s']):.2f} s, "
                  f"training {sum(r['train_s']) / len(r['train_s']):.2f} s per iteration, "
                  f"share {100 * r['eval_share']:.1f}%", flush=True)
    finally:
        ray.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
