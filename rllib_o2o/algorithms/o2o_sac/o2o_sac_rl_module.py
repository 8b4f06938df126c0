"""RLModule of the SAC family: tanh-Gaussian actor, ensemble critic, frozen pi0.

RLlib's `DefaultSACTorchRLModule` keeps each Q-network as its own encoder and
head; here the critics (twins by default, `model_config["num_critics"]`, layer-normalised
with `model_config["critic_layer_norm"]`) are one stacked `EnsembleMLP` so a single batched matmul evaluates them all (the speed
issue), and the module also holds what ACA adds: a frozen reference actor pi0
and the temperature, so that checkpoints carry all of the learner's state
(RLlib's SAC keeps `log_alpha` outside).
With `model_config["density_ratio"]` it also holds the Balanced Replay baseline's
density-ratio network w(s,a) ~ d_online / d_offline; with `model_config["state_value"]` IQL's
state value V(s); with `model_config["actor_ema"]` a moving average of the actor's weights
(the policy an offline stage hands over when it keeps one).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from rllib_o2o.maths import tanh_gaussian_rsample
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor

CRITIC_ATTRS = ["critic", "target_critic", "ref_actor"]
# Parts of a module only its offline training uses: IQL's V(s) and the actor's moving average.
OFFLINE_TRAINING_ONLY = ("state_value.", "ema_actor.")


def handover_weights(weights: dict) -> dict:
    """The weights an offline stage hands over (and evaluates): with a moving average of the actor
    kept (`ema_actor.*`), that average as the actor; without the parts only offline training uses,
    so that the hand-over has every later stage's layout."""
    actor = {k: v for k, v in weights.items() if not k.startswith(OFFLINE_TRAINING_ONLY)}
    averaged = {f"actor.{k[len('ema_actor.'):]}": v for k, v in weights.items() if k.startswith("ema_actor.")}
    return {**actor, **averaged}


class O2OSACTorchRLModule(TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI):
    """Actions leave the module in env units; the learner works in [-1, 1]."""

    def setup(self):
        hidden = tuple(self.model_config.get("hidden", (256, 256)))
        activation = self.model_config.get("actor_activation", "relu")
        self.obs_dim = int(np.prod(self.observation_space.shape))
        self.act_dim = int(np.prod(self.action_space.shape))
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, hidden, activation)
        # copies: spaces that came through Ray's object store hold read-only arrays
        low = torch.tensor(self.action_space.low, dtype=torch.float32)
        high = torch.tensor(self.action_space.high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0, persistent=False)
        self.register_buffer("action_bias", (high + low) / 2.0, persistent=False)
        if self.inference_only:
            return
        self.critic = EnsembleMLP(int(self.model_config.get("num_critics", 2)), self.obs_dim + self.act_dim, 1,
                                  hidden, layer_norm=bool(self.model_config.get("critic_layer_norm", False)))
        self.ref_actor = TanhGaussianActor(self.obs_dim, self.act_dim, hidden, activation).requires_grad_(False)
        self.log_alpha = nn.Parameter(
            torch.tensor(float(np.log(self.model_config.get("initial_alpha", 1.0))))
        )
        # Online updates done so far: drives ACA's w schedule and survives checkpoints.
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        if self.model_config.get("state_value"):  # IQL's V(s)
            self.state_value = EnsembleMLP(1, self.obs_dim, 1, hidden)
        if self.model_config.get("actor_ema"):  # the actor's moving average (O2OSACConfig.actor_ema)
            self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        if self.model_config.get("density_ratio"):
            self.density_ratio = EnsembleMLP(1, self.obs_dim + self.act_dim, 1, hidden)
            with torch.no_grad():  # w starts near 1: every row looks as online as offline
                self.density_ratio.biases[-1].fill_(1.0)

    # -- RLlib APIs -------------------------------------------------------------
    def make_target_networks(self):
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)

    def get_target_network_pairs(self):
        return [(self.critic, self.target_critic)]

    def forward_target(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {"q_target": self.q_values(batch[Columns.OBS], batch[Columns.ACTIONS], target=True)}

    def get_non_inference_attributes(self) -> list[str]:
        extra = [name for name, key in (("density_ratio", "density_ratio"), ("state_value", "state_value"),
                                        ("ema_actor", "actor_ema")) if self.model_config.get(key)]
        return CRITIC_ATTRS + ["log_alpha", "num_updates"] + extra

    def _env_action(self, squashed: torch.Tensor) -> torch.Tensor:
        return squashed * self.action_scale + self.action_bias

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean, _ = self.actor(batch[Columns.OBS])
        return {Columns.ACTIONS: self._env_action(torch.tanh(mean))}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean, log_std = self.actor(batch[Columns.OBS])
        action, _ = tanh_gaussian_rsample(mean, log_std)
        return {Columns.ACTIONS: self._env_action(action)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean, log_std = self.actor(batch[Columns.OBS])
        return {"mean": mean, "log_std": log_std}

    # -- helpers used by the learner -------------------------------------------
    def q_values(self, obs: torch.Tensor, actions: torch.Tensor, target: bool = False,
                 members: torch.Tensor | None = None) -> torch.Tensor:
        """Every critic at once, shape [E, B]; with `members` (indices), only those, [len(members), B]."""
        net = self.target_critic if target else self.critic
        return net(torch.cat([obs, actions], dim=-1), members).squeeze(-1)

    def density_ratios(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Balanced Replay's w(s,a) >= 0, shape [B]."""
        return torch.relu(self.density_ratio(torch.cat([obs, actions], dim=-1))).squeeze(-1).squeeze(0)

    def state_values(self, obs: torch.Tensor) -> torch.Tensor:
        """IQL's V(s), shape [B]."""
        return self.state_value(obs).squeeze(-1).squeeze(0)

    def freeze_reference_policy(self) -> None:
        """Copies the current actor into pi0 (ACA's frozen reference policy)."""
        self.ref_actor.load_state_dict(self.actor.state_dict())
        self.ref_actor.requires_grad_(False)
