"""How far ACA's actor leaves pi0 at the t = 0 fixed point, from its gradient estimator alone.

At the hand-over R has no action dependence and w = alpha = 1, so the actor's objective is
KL(pi || pi0) - E[R], stationary at pi = pi0. This script trains only the actor of an aligned
module on that objective (R held constant in a; Adam at the online actor lr, grad clip 0.25, batches
of dataset states, as the online stage does), once per estimator of log pi's gradient:

- `full`: the reparameterised log pi as built (`maths.tanh_gaussian_rsample`): zero gradient at pi0
  only on average, its noise is the score d/dtheta log pi_theta(a);
- `path-only`: `maths.tanh_gaussian_rsample_path_only` (sticking the landing): zero per sample.

Printed per estimator and seed: KL(pi || pi0) and the mean-action shift on 4096 dataset states
after each checkpoint, and (with --episodes) the normalised score of the mean action after the
last one, beside pi0's on the same start states (episode i reset with seed 1000 + i).

    python experiments/fixed_point_drift.py RUN/DATASET/seedK/alignment-distilled/module DATA_DIR \
        --updates 250 1000 2000 --seeds 0 1 2 3 --episodes 10 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ESTIMATORS = ("full", "path-only")
ACTOR_LR = 3e-4  # O2OSACConfig.actor_lr


def drift(actor0, obs_all, probe, estimator: str, seed: int, checkpoints: list[int], clip_beta: float,
          grad_clip: float, batch_size: int):
    """Actor-only updates on E[log pi - l(s, a)] from pi0; (rows per checkpoint, final actor)."""
    import torch

    from rllib_o2o import maths

    sample = {"full": maths.tanh_gaussian_rsample, "path-only": maths.tanh_gaussian_rsample_path_only}[estimator]
    torch.manual_seed(seed)
    actor, ref = copy.deepcopy(actor0), copy.deepcopy(actor0).requires_grad_(False)
    params = list(actor.parameters())
    optimizer = torch.optim.Adam(params, lr=ACTOR_LR)
    rows = []
    for step in range(1, max(checkpoints) + 1):
        obs = obs_all[torch.randint(len(obs_all), (batch_size,))]
        action, log_prob = sample(*actor(obs))
        ref_mean, ref_log_std = ref(obs)
        l = maths.clipped_log_prob(maths.tanh_gaussian_log_prob(ref_mean, ref_log_std, action),
                                   maths.log_prob_clip_threshold(ref_mean, ref_log_std, clip_beta))
        loss = maths.aca_actor_loss(1.0, log_prob, torch.zeros_like(log_prob), 1.0, l)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if step in checkpoints:
            with torch.no_grad():
                mean, log_std = actor(probe)
                ref_mean, ref_log_std = ref(probe)
                rows.append({"updates": step,
                             "kl_to_reference": float(maths.tanh_gaussian_kl(mean, log_std, ref_mean,
                                                                             ref_log_std).mean()),
                             "mean_action_shift": float((torch.tanh(mean) - torch.tanh(ref_mean)).abs().mean())})
    return rows, actor


def mean_action_return(actor, meta: dict, low, high, episodes: int) -> float:
    """Mean return of the actor's mean action over `episodes` episodes, episode i reset with seed 1000 + i."""
    from rllib_o2o.data.rollouts import evaluate_policy
    from rllib_o2o.policy import ActorPolicy

    policy = ActorPolicy(actor.state_dict(), meta["obs_dim"], meta["act_dim"], meta["hidden"], low, high,
                         seed=None, activation=meta["actor_activation"])
    return float(evaluate_policy(meta["env_id"], policy, episodes, seed=1000, num_envs=episodes).mean())


def main(argv=None) -> dict:
    import numpy as np
    import torch

    from rllib_o2o.checkpoints import load_module_checkpoint
    from rllib_o2o.data.schema import read_dataset
    from rllib_o2o.data.scores import normalized_score, reference_scores
    from rllib_o2o.networks import TanhGaussianActor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path, help="an aligned module checkpoint (module.pt + meta.json)")
    parser.add_argument("dataset", type=Path, help="the run's dataset directory (the states to train on)")
    parser.add_argument("--updates", type=int, nargs="+", default=[250, 1000, 2000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--episodes", type=int, default=0, help="evaluation episodes after the last checkpoint")
    parser.add_argument("--clip-beta", type=float, default=7.0)
    parser.add_argument("--grad-clip", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    weights, meta = load_module_checkpoint(args.module)
    actor0 = TanhGaussianActor(meta["obs_dim"], meta["act_dim"], tuple(meta["hidden"]), meta["actor_activation"])
    actor0.load_state_dict({k[len("actor."):]: torch.as_tensor(v) for k, v in weights.items()
                            if k.startswith("actor.")})
    transitions, data_meta = read_dataset(args.dataset)
    obs_all = torch.as_tensor(transitions["obs"], dtype=torch.float32)
    probe = obs_all[torch.randperm(len(obs_all), generator=torch.Generator().manual_seed(0))[:4096]]
    low, high = (np.asarray(x, np.float32) for x in (data_meta.action_low, data_meta.action_high))
    refs = reference_scores(meta["env_id"])
    score = (lambda ret: float(normalized_score(ret, *refs))) if refs else (lambda ret: None)

    result = {"module": str(args.module), "dataset": str(args.dataset), "env_id": meta["env_id"],
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "episodes": args.episodes, "runs": []}
    if args.episodes:
        ret = mean_action_return(actor0, meta, low, high, args.episodes)
        result["reference"] = {"return": ret, "score": score(ret)}
        print(f"pi0: return {ret:.1f} score {score(ret)}", flush=True)
    for estimator in args.estimators:
        for seed in args.seeds:
            rows, actor = drift(actor0, obs_all, probe, estimator, seed, sorted(args.updates), args.clip_beta,
                                args.grad_clip, args.batch_size)
            run = {"estimator": estimator, "seed": seed, "checkpoints": rows}
            if args.episodes:
                ret = mean_action_return(actor, meta, low, high, args.episodes)
                run.update({"return": ret, "score": score(ret)})
            result["runs"].append(run)
            last = rows[-1]
            evaluated = f", score {run['score']:.1f}" if args.episodes and run["score"] is not None else ""
            print(f"{estimator} seed {seed}: after {last['updates']} updates KL(pi||pi0) "
                  f"{last['kl_to_reference']:.4f}, |a - a0| {last['mean_action_shift']:.4f}{evaluated}", flush=True)
    for estimator in args.estimators:
        runs = [r for r in result["runs"] if r["estimator"] == estimator]
        kl = statistics.fmean(r["checkpoints"][-1]["kl_to_reference"] for r in runs)
        shift = statistics.fmean(r["checkpoints"][-1]["mean_action_shift"] for r in runs)
        line = f"{estimator}: mean over {len(runs)} seeds KL {kl:.4f}, |a - a0| {shift:.4f}"
        if args.episodes and refs:
            line += f", score {statistics.fmean(r['score'] for r in runs):.1f} (pi0 {result['reference']['score']:.1f})"
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
