"""A trained actor as a plain numpy policy, for data collection and evaluation."""

from __future__ import annotations

import numpy as np
import torch

from rllib_o2o.maths import tanh_gaussian_rsample
from rllib_o2o.networks import TanhGaussianActor


class ActorPolicy:
    """obs (env units) -> action (env units); the mean action unless `stochastic`."""

    def __init__(self, actor_state: dict, obs_dim: int, act_dim: int, hidden, low, high,
                 stochastic: bool = False, seed: int | None = 0, activation: str = "relu"):
        """`seed`: seeds torch's global generator (what stochastic actions draw from); None leaves it
        as it is, for a policy built inside a training process."""
        self.actor = TanhGaussianActor(obs_dim, act_dim, tuple(hidden), activation)
        self.actor.load_state_dict({k: torch.tensor(np.array(v)) for k, v in actor_state.items()})
        self.actor.eval()
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self.stochastic = stochastic
        if seed is not None:
            torch.manual_seed(seed)

    @classmethod
    def from_module_weights(cls, weights: dict, **kwargs) -> ActorPolicy:
        actor_state = {k[len("actor."):]: v for k, v in weights.items() if k.startswith("actor.")}
        return cls(actor_state, **kwargs)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """One observation [obs_dim] -> one action [act_dim]; a batch [..., obs_dim] -> [..., act_dim]."""
        obs = np.asarray(obs, dtype=np.float32)
        mean, log_std = self.actor(torch.as_tensor(obs.reshape(-1, self.actor.obs_dim)))
        squashed = tanh_gaussian_rsample(mean, log_std)[0] if self.stochastic else torch.tanh(mean)
        action = self.low + (squashed.numpy() + 1.0) * 0.5 * (self.high - self.low)
        return action.reshape(*obs.shape[:-1], self.actor.act_dim)
