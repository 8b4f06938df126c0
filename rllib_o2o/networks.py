"""Torch networks of the project: a stacked MLP ensemble and the tanh-Gaussian actor.

Pure torch, no Ray; the RLlib modules wrap these. The twin critics Q_i / R_i and
the twin baselines Z_i are each ONE `EnsembleMLP`, so both members run in one
batched matmul per layer instead of two separate modules.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from rllib_o2o.maths import LOG_STD_MAX, LOG_STD_MIN, ensemble_layer_norm, zero_action_columns


class EnsembleMLP(nn.Module):
    """E independent MLPs evaluated together.

    Parameters are stacked per layer i: `weights.{i}` [E, in_i, out_i] (used as
    x @ W, i.e. the transpose of nn.Linear's layout) and `biases.{i}` [E, 1, out_i].
    Member e is exactly `x @ weights[i][e] + biases[i][e]` per layer, `activation`
    between layers, no activation on the output. With `layer_norm`, each hidden layer's
    output is normalised before its activation (`maths.ensemble_layer_norm`, RLPD's and
    WSRL's critics), with a gain `norm_gains.{i}` and bias `norm_biases.{i}` [E, 1, out_i]
    per member, starting at 1 and 0.
    """

    def __init__(
        self,
        num_members: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.num_members = num_members
        self.layer_norm = layer_norm
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden = tuple(hidden)
        self.activation = activation
        sizes = (in_dim, *self.hidden, out_dim)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_members, n_in, n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(num_members, 1, n_out)) for n_out in sizes[1:]
        )
        if layer_norm:
            self.norm_gains = nn.ParameterList(nn.Parameter(torch.ones(num_members, 1, n)) for n in self.hidden)
            self.norm_biases = nn.ParameterList(nn.Parameter(torch.zeros(num_members, 1, n)) for n in self.hidden)
        self.act = activation()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's default init, independently per member.

        nn.Linear uses kaiming_uniform(a=sqrt(5)) for the weight and U(+-1/sqrt(fan_in))
        for the bias; both reduce to U(-1/sqrt(fan_in), 1/sqrt(fan_in)). The bound is
        computed explicitly because torch's fan-in helper misreads a stacked [E, in, out] tensor.
        """
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])
            w.uniform_(-bound, bound)
            b.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, in] (shared by the members evaluated) or [E', B, in]; returns [E', B, out]. `members`
        (indices, E' of them): evaluate only those, as REDQ's target min over a random pair needs (2 of 10
        members' work instead of 10); None: all E."""
        count = self.num_members if members is None else len(members)

        def chosen(param: torch.Tensor) -> torch.Tensor:
            return param if members is None else param.index_select(0, members)

        if x.dim() == 2:
            x = x.expand(count, *x.shape)
        elif x.dim() != 3 or x.shape[0] != count:
            expected = f"[B, {self.in_dim}] or [{count}, B, {self.in_dim}]"
            raise ValueError(f"expected {expected}, got {list(x.shape)}")
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(chosen(b), x, chosen(w))
            if i < last:
                if self.layer_norm:
                    x = ensemble_layer_norm(x, chosen(self.norm_gains[i]), chosen(self.norm_biases[i]))
                x = self.act(x)
        return x


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mean(s), exp(log_std(s))^2)), actions in [-1, 1].

    MLP trunk (ReLU by default; tanh for policies imported from RLlib's default
    encoders), one linear head split into mean and log_std; log_std is hard-clamped
    to [LOG_STD_MIN, LOG_STD_MAX]. Sampling and log-densities live in `maths`.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        layers: list[nn.Module] = []
        n_in = obs_dim
        for n_out in hidden:
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
            n_in = n_out
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, 2 * act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def critic_from_baseline(z: EnsembleMLP, action_dim: int) -> EnsembleMLP:
    """Critic surgery (stage 2 step 2): R_i(s,a) from the baseline Z_i(s).

    Same members, hidden sizes and activation; input concat([obs, action], -1). All
    of Z's parameters are copied and the first layer's action rows are zero, so
    R_i(s,a) == Z_i(s) for every a while R can still learn the action dependence
    online (those rows receive gradient). The result is on Z's device and dtype.
    """
    r = EnsembleMLP(z.num_members, z.in_dim + action_dim, z.out_dim, z.hidden, z.activation)
    r = r.to(device=z.weights[0].device, dtype=z.weights[0].dtype)
    with torch.no_grad():
        r.weights[0].copy_(zero_action_columns(z.weights[0], z.in_dim, action_dim))
        for dst, src in zip(list(r.weights)[1:], list(z.weights)[1:]):
            dst.copy_(src)
        for dst, src in zip(r.biases, z.biases):
            dst.copy_(src)
    return r
