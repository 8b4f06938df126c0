"""The online critic's TD error at the hand-over (t = 0), on pi0's own transitions.

At t = 0 pi = pi0, w = alpha = 1 and R = Z, so ACA's target is y = r + gamma [min Rbar(s', a') +
w l(s', a') - alpha log pi(a'|s') (+ beta H(pi0(.|s')) with `--bonus`)]. If Z is the target's fixed
point, delta = y - R(s, a) has mean zero; a bias delta_bar(s) also teaches R's zeroed action rows a
direction before any return was observed: the rows' gradient is E[delta a g] (g: backpropagated
feature gradients), and with a bias it is dominated by delta_bar(s) mu(s), pi0's mean action, rather
than by E[delta (a - mu(s))], the part that carries information about actions.

pi0 (the aligned module's actor) is rolled out with sampled actions in its env for `--episodes`
episodes (reset seeds 0, 1, ...); printed and written: the rewards' mean, R's mean, delta's mean and
spread, pi0's entropy at s', and per action dimension E[delta a] beside E[delta (a - mu(s))]. For each
`--bonus` value (0 is the target as the spec writes it; alpha_off is `aca-consistent-target`'s).

    python experiments/handover_td_bias.py RUN/DATASET/seedK/alignment-distilled/module --episodes 2 \
        --bonus 0 0.57 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GAMMA = 0.99  # O2OSACConfig.gamma
CLIP_BETA = 7.0  # the medium preset's beta


def rollout(env_id: str, pi0, episodes: int, seed: int) -> dict:
    """pi0's transitions with sampled actions (as the first online fragments collect them)."""
    import gymnasium as gym
    import numpy as np
    import torch

    from rllib_o2o import maths

    env = gym.make(env_id)
    torch.manual_seed(seed)
    rows = {k: [] for k in ("obs", "actions", "rewards", "new_obs", "terminateds")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            with torch.no_grad():
                action = maths.tanh_gaussian_rsample(*pi0(torch.as_tensor(obs, dtype=torch.float32)[None]))[0][0]
            scale = (env.action_space.high - env.action_space.low) / 2.0  # as the RLModule's env actions
            bias = (env.action_space.high + env.action_space.low) / 2.0
            new_obs, reward, terminated, truncated, _ = env.step(action.numpy() * scale + bias)
            for key, value in zip(rows, (obs, action.numpy(), reward, new_obs, terminated)):
                rows[key].append(value)
            obs, done = new_obs, terminated or truncated
    return {k: torch.as_tensor(np.array(v), dtype=torch.float32) for k, v in rows.items()}


def td_bias(pi0, critic, b: dict, bonus: float) -> dict:
    from types import SimpleNamespace

    import torch

    from rllib_o2o import maths
    from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import O2OSACTorchLearner

    clip = SimpleNamespace(use_log_prob_clip=True, clip_beta=CLIP_BETA)
    with torch.no_grad():
        next_mean, next_log_std = pi0(b["new_obs"])
        next_act, next_log_prob = maths.tanh_gaussian_rsample(next_mean, next_log_std)
        l_next = O2OSACTorchLearner._reference_term(None, clip, b["new_obs"], next_act, (next_mean, next_log_std))
        next_q = critic(torch.cat([b["new_obs"], next_act], -1)).squeeze(-1).min(0).values + l_next
        next_q = next_q + maths.offline_entropy_bonus(bonus, maths.tanh_gaussian_rsample(next_mean, next_log_std)[1])
        y = maths.soft_q_target(b["rewards"], b["terminateds"], GAMMA, next_q, next_log_prob, 1.0)
        q = critic(torch.cat([b["obs"], b["actions"]], -1)).squeeze(-1)
        delta = y - q.mean(0)
        mu = torch.tanh(pi0(b["obs"])[0])
    return {"bonus": bonus, "reward_mean": float(b["rewards"].mean()), "r_mean": float(q.mean()),
            "delta_mean": float(delta.mean()), "delta_std": float(delta.std()),
            "pi0_entropy_at_next_states": float(-next_log_prob.mean()),
            "E[delta a]": [float(x) for x in (delta[:, None] * b["actions"]).mean(0)],
            "E[delta (a - mu)]": [float(x) for x in (delta[:, None] * (b["actions"] - mu)).mean(0)]}


def main(argv=None) -> dict:
    import torch

    from rllib_o2o.checkpoints import load_module_checkpoint
    from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path, help="an aligned module checkpoint (RUN/.../alignment-*/module)")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--bonus", type=float, nargs="+", default=[0.0], help="beta of the target's entropy bonus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    weights, meta = load_module_checkpoint(args.module, expect={"stage": "aligned"})
    tensors = {k: torch.as_tensor(v) for k, v in weights.items()}
    hidden, obs_dim, act_dim = tuple(meta["hidden"]), meta["obs_dim"], meta["act_dim"]
    pi0 = TanhGaussianActor(obs_dim, act_dim, hidden, meta.get("actor_activation", "relu"))
    pi0.load_state_dict({k[len("actor."):]: v for k, v in tensors.items() if k.startswith("actor.")})
    critic = EnsembleMLP(tensors["critic.weights.0"].shape[0], obs_dim + act_dim, 1, hidden)
    critic.load_state_dict({k[len("critic."):]: v for k, v in tensors.items() if k.startswith("critic.")})
    batch = rollout(meta["env_id"], pi0, args.episodes, args.seed)
    result = {"module": str(args.module), "env_id": meta["env_id"], "episodes": args.episodes,
              "transitions": len(batch["rewards"]),
              "offline_temperature": meta.get("offline_temperature"),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "rows": []}
    for bonus in args.bonus:
        row = td_bias(pi0, critic, batch, bonus)
        result["rows"].append(row)
        print(f"bonus {bonus:g}: reward {row['reward_mean']:.3f}, R {row['r_mean']:.2f}, delta {row['delta_mean']:+.3f} "
              f"± {row['delta_std']:.3f}, H(pi0) at s' {row['pi0_entropy_at_next_states']:.2f}, "
              f"|E[delta a]| {sum(abs(x) for x in row['E[delta a]']) / act_dim:.3f}, "
              f"|E[delta (a - mu)]| {sum(abs(x) for x in row['E[delta (a - mu)]']) / act_dim:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
