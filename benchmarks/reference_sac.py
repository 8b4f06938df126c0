"""Reference SAC update speed: the practical limit for one learner process.

A deliberately plain, single-process SAC update loop in pure torch (two separate
nn.Sequential critics, a tanh-Gaussian actor, automatic temperature, Polyak
targets), fed from a preallocated random tensor buffer. It imports nothing from
rllib_o2o on purpose: the project's RLlib learner is measured against it, so it
must stay an independent, textbook implementation. `SAC(..., compile_backend=...)` runs its
two losses under torch.compile, as the project's learner does with `torch_compile_learner`.

    python benchmarks/reference_sac.py --obs-dim 11 --act-dim 3 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

HIDDEN = 256
LR = 3e-4
GAMMA = 0.99
TAU = 0.005
BUFFER_SIZE = 100_000


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out_dim)
    )


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        dist = Normal(mean, log_std.clamp(-20.0, 2.0).exp())
        u = dist.rsample()
        log_prob = dist.log_prob(u).sum(-1) - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob


class SAC:
    def __init__(self, obs_dim: int, act_dim: int, device: str = "cpu", compile_backend: str | None = None,
                 compile_mode: str | None = None):
        self.actor = Actor(obs_dim, act_dim).to(device)
        self.q1, self.q2 = mlp(obs_dim + act_dim, 1).to(device), mlp(obs_dim + act_dim, 1).to(device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros((), requires_grad=True, device=device)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=LR)
        self.critic_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=LR)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=LR)
        # With a backend, the two losses (and their backward passes) run under torch.compile; the
        # optimizer steps, the temperature and the targets stay eager.
        self.compiled = compile_backend is not None
        self.critic_loss, self.actor_loss = self._critic_loss, self._actor_loss
        if self.compiled:
            self.critic_loss = torch.compile(self._critic_loss, backend=compile_backend, mode=compile_mode)
            self.actor_loss = torch.compile(self._actor_loss, backend=compile_backend, mode=compile_mode)

    def _critic_loss(self, obs, act, rew, next_obs, done, alpha) -> torch.Tensor:
        with torch.no_grad():
            next_act, next_log_prob = self.actor.sample(next_obs)
            next_sa = torch.cat([next_obs, next_act], -1)
            next_q = torch.min(self.q1_target(next_sa), self.q2_target(next_sa)).squeeze(-1)
            y = rew + GAMMA * (1.0 - done) * (next_q - alpha * next_log_prob)
        sa = torch.cat([obs, act], -1)
        return F.mse_loss(self.q1(sa).squeeze(-1), y) + F.mse_loss(self.q2(sa).squeeze(-1), y)

    def _actor_loss(self, obs, alpha) -> tuple[torch.Tensor, torch.Tensor]:
        new_act, log_prob = self.actor.sample(obs)
        new_sa = torch.cat([obs, new_act], -1)
        q = torch.min(self.q1(new_sa), self.q2(new_sa)).squeeze(-1)
        return (alpha * log_prob - q).mean(), log_prob

    def update(self, obs, act, rew, next_obs, done) -> None:
        if self.compiled:  # CUDA graphs (mode "reduce-overhead"): one update is one step
            torch.compiler.cudagraph_mark_step_begin()
        alpha = self.log_alpha.exp().detach()

        critic_loss = self.critic_loss(obs, act, rew, next_obs, done, alpha)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        actor_loss, log_prob = self.actor_loss(obs, alpha)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy).detach()).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.mul_(1.0 - TAU).add_(p, alpha=TAU)


def reference_ms_per_update(
    obs_dim: int = 3, act_dim: int = 1, batch_size: int = 256, num_updates: int = 300, warmup: int = 30, seed: int = 0,
    device: str = "cpu", compile_backend: str | None = None, compile_mode: str | None = None,
) -> float:
    """Mean wall-clock milliseconds per SAC update (critic, actor, alpha, targets), after `warmup` updates.

    Uses torch's current thread setting; the caller chooses it. On "cuda" the buffer lives on
    the GPU too, and the clock stops after the device has finished (synchronize). With
    `compile_backend` the losses are compiled (`SAC`); the warm-up includes the compilation.
    """
    torch.manual_seed(seed)
    sac = SAC(obs_dim, act_dim, device, compile_backend=compile_backend, compile_mode=compile_mode)
    buffer = {
        "obs": torch.randn(BUFFER_SIZE, obs_dim, device=device),
        "act": torch.rand(BUFFER_SIZE, act_dim, device=device) * 2 - 1,
        "rew": torch.randn(BUFFER_SIZE, device=device),
        "next_obs": torch.randn(BUFFER_SIZE, obs_dim, device=device),
        "done": (torch.rand(BUFFER_SIZE, device=device) < 0.01).float(),
    }

    def step() -> None:
        idx = torch.randint(BUFFER_SIZE, (batch_size,), device=device)
        sac.update(*(v[idx] for v in buffer.values()))

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(num_updates):
        step()
    sync()
    return (time.perf_counter() - start) * 1e3 / num_updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs-dim", type=int, default=11)
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-updates", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ms = reference_ms_per_update(args.obs_dim, args.act_dim, args.batch_size, args.num_updates, device=args.device)
    print(
        f"reference SAC obs_dim={args.obs_dim} act_dim={args.act_dim} batch={args.batch_size} device={args.device} "
        f"threads={torch.get_num_threads()}: {ms:.3f} ms/update ({1e3 / ms:.0f} updates/s)"
    )


if __name__ == "__main__":
    main()
