"""Ground truth for the alignment on Pendulum-v1: the baseline Z and the critics against pi0's true values.

    python experiments/pendulum_values.py runs/emb/base [--alignment alignment-distilled] [--json FILE]

Pendulum's dynamics are known and deterministic, so pi0's true values can be computed instead of
guessed: batched Monte-Carlo rollouts of pi0 (stochastic, as online collection acts) from states
pi0 visits. For an aligned run directory (its `alignment/` and `offline/` modules) it prints:
- Z(s) against V^pi0(s): mean error and correlation (Z is what the aligned critic R starts as);
- the t = 0 TD target's error, E_{a~pi0}[r + gamma Z(s')] - Z(s): zero when Z is pi0's value;
- the action dependence R acquires first, r(s,a) + gamma Z(s'(s,a)) on a grid of actions, against
  the true Q^pi0(s, a): its spread over actions and the correlation of the two profiles per
  state (1 = R's first action gradient points where pi0's true one does);
- the same for the offline critic Q_off and for Z_off(s) = E_{a~pi0} min_i Q_off(s, a).
Nothing is trained here. Seeded; one core.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllib_o2o import maths  # noqa: E402
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor  # noqa: E402

# gymnasium's Pendulum-v1 (classic_control/pendulum.py), default g = 10
GRAVITY, MASS, LENGTH, DT, MAX_SPEED, MAX_TORQUE = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0


def pendulum_step(theta: torch.Tensor, theta_dot: torch.Tensor, torque: torch.Tensor):
    """One step of Pendulum-v1 for a batch of states; returns (theta', theta_dot', reward).

    reward = -(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2), u = clip(torque, -2, 2);
    theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8);
    theta' = theta + theta_dot' dt.
    """
    u = torque.clamp(-MAX_TORQUE, MAX_TORQUE)
    angle = ((theta + math.pi) % (2 * math.pi)) - math.pi
    reward = -(angle ** 2 + 0.1 * theta_dot ** 2 + 0.001 * u ** 2)
    accel = 3 * GRAVITY / (2 * LENGTH) * torch.sin(theta) + 3.0 / (MASS * LENGTH ** 2) * u
    new_theta_dot = (theta_dot + accel * DT).clamp(-MAX_SPEED, MAX_SPEED)
    return theta + new_theta_dot * DT, new_theta_dot, reward


def observation(theta: torch.Tensor, theta_dot: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], -1)


def load_module(path: Path) -> tuple[TanhGaussianActor, EnsembleMLP]:
    state = torch.load(path, weights_only=False)
    actor = TanhGaussianActor(3, 1)
    actor.load_state_dict({k[len("actor."):]: torch.as_tensor(v) for k, v in state.items() if k.startswith("actor.")})
    critic = EnsembleMLP(2, state["critic.weights.0"].shape[1], 1)
    critic.load_state_dict({k[len("critic."):]: torch.as_tensor(v) for k, v in state.items()
                            if k.startswith("critic.")})
    return actor, critic


@torch.no_grad()
def policy_torque(actor: TanhGaussianActor, obs: torch.Tensor) -> torch.Tensor:
    """A stochastic action of pi0 in env units (the policy's [-1, 1] times the max torque), [...]."""
    mean, log_std = actor(obs)
    return maths.tanh_gaussian_rsample(mean, log_std)[0].squeeze(-1) * MAX_TORQUE


@torch.no_grad()
def discounted_return(actor, theta, theta_dot, gamma: float, horizon: int, first_torque=None) -> torch.Tensor:
    """sum_t gamma^t r_t of one rollout per entry, pi0 acting (after `first_torque` when given)."""
    total, discount = torch.zeros_like(theta), 1.0
    for t in range(horizon):
        torque = first_torque if t == 0 and first_torque is not None else policy_torque(actor, observation(theta, theta_dot))
        theta, theta_dot, reward = pendulum_step(theta, theta_dot, torque)
        total += discount * reward
        discount *= gamma
    return total


def profile_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over states of the correlation of two value profiles over the action grid, [S, K]."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean())


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def spread(values: torch.Tensor) -> float:
    """Mean over states of max - min over the action grid."""
    return float((values.max(1).values - values.min(1).values).mean())


def check(run_dir: Path, num_states: int, rollouts: int, grid: int, horizon: int, gamma: float, seed: int,
          alignment: str = "alignment") -> dict:
    torch.manual_seed(seed)
    actor, aligned = load_module(run_dir / alignment / "module" / "module.pt")
    _, offline_critic = load_module(run_dir / "offline" / "module" / "module.pt")

    def z(obs):  # R(s, .) == Z(s) at t = 0: any action column, here 0
        flat = obs.reshape(-1, 3)
        values = aligned(torch.cat([flat, torch.zeros(len(flat), 1)], -1)).min(0).values.squeeze(-1)
        return values.reshape(obs.shape[:-1])

    def z_off(obs):  # the target of aca-distilled-z's Z, 16 actions per state
        flat = obs.reshape(-1, 3)
        q = torch.stack([offline_critic(torch.cat([flat, policy_torque(actor, flat)[:, None] / MAX_TORQUE], -1))
                         .squeeze(-1) for _ in range(16)], 1)  # [E, K, B]
        return maths.critic_value_of_policy(q).reshape(obs.shape[:-1])

    episodes = 16  # states pi0 visits: stochastic episodes from Pendulum's reset distribution
    theta, theta_dot = torch.empty(episodes).uniform_(-math.pi, math.pi), torch.empty(episodes).uniform_(-1, 1)
    visited = []
    for _ in range(200):
        visited.append(torch.stack([theta, theta_dot], -1))
        theta, theta_dot, _ = pendulum_step(theta, theta_dot, policy_torque(actor, observation(theta, theta_dot)))
    states = torch.cat(visited)[torch.randperm(200 * episodes)[:num_states]]
    th, thd = states[:, 0], states[:, 1]
    torques = torch.linspace(-MAX_TORQUE, MAX_TORQUE, grid)
    with torch.no_grad():
        v_true = discounted_return(actor, th.repeat(rollouts), thd.repeat(rollouts), gamma, horizon)
        v_true = v_true.view(rollouts, -1).mean(0)
        th_k, thd_k, u_k = th.repeat_interleave(grid), thd.repeat_interleave(grid), torques.repeat(num_states)
        q_true = discounted_return(actor, th_k.repeat(rollouts), thd_k.repeat(rollouts), gamma, horizon,
                                   first_torque=u_k.repeat(rollouts)).view(rollouts, num_states, grid).mean(0)
        next_th, next_thd, reward = pendulum_step(th_k, thd_k, u_k)
        obs = observation(th, thd)
        z_now = z(obs)
        lookahead_z = (reward + gamma * z(observation(next_th, next_thd))).view(-1, grid)
        lookahead_z_off = (reward + gamma * z_off(observation(next_th, next_thd))).view(-1, grid)
        q_off = offline_critic(torch.cat([obs.repeat_interleave(grid, 0), (u_k / MAX_TORQUE)[:, None]], -1))
        q_off = q_off.min(0).values.squeeze(-1).view(-1, grid)
        sampled = torch.stack([policy_torque(actor, obs) for _ in range(32)])
        s_th, s_thd, s_r = pendulum_step(th.expand(32, -1), thd.expand(32, -1), sampled)
        td_error_t0 = (s_r + gamma * z(observation(s_th, s_thd))).mean(0) - z_now
        z_off_now = z_off(obs)
    return {
        "run": str(run_dir), "alignment": alignment, "states": num_states, "rollouts": rollouts, "grid": grid, "horizon": horizon,
        "gamma": gamma, "seed": seed,
        "v_true_mean": float(v_true.mean()),
        "z_minus_v_mean": float((z_now - v_true).mean()), "z_v_correlation": correlation(z_now, v_true),
        "td_error_t0_mean": float(td_error_t0.mean()), "td_error_t0_rms": float(td_error_t0.pow(2).mean().sqrt()),
        "q_true_action_spread": spread(q_true),
        "lookahead_z_action_spread": spread(lookahead_z),
        "lookahead_z_profile_correlation": profile_correlation(lookahead_z, q_true),
        "z_off_minus_v_mean": float((z_off_now - v_true).mean()), "z_off_v_correlation": correlation(z_off_now, v_true),
        "lookahead_z_off_action_spread": spread(lookahead_z_off),
        "lookahead_z_off_profile_correlation": profile_correlation(lookahead_z_off, q_true),
        "q_off_action_spread": spread(q_off), "q_off_profile_correlation": profile_correlation(q_off, q_true),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path, help="run directories with alignment/ and offline/ modules")
    p.add_argument("--states", type=int, default=256, help="states pi0 visits, sampled from 16 episodes")
    p.add_argument("--rollouts", type=int, default=16, help="Monte-Carlo rollouts per value")
    p.add_argument("--grid", type=int, default=9, help="actions on the torque grid [-2, 2]")
    p.add_argument("--horizon", type=int, default=400, help="rollout length (0.99^400 = 0.018)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alignment", default="alignment",
                   help="the aligned stage's directory in each run (alignment-distilled for aca-distilled-z)")
    p.add_argument("--json", type=Path, help="write the figures of every run here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = [check(d, args.states, args.rollouts, args.grid, args.horizon, args.gamma, args.seed, args.alignment)
               for d in args.run_dirs]
    for r in results:
        print(json.dumps(r, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
