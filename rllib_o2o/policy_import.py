"""Turn an offline checkpoint from another algorithm into pi0 for the alignment stage.

Accepted: this project's module checkpoints (stage 1 output), and RLlib
algorithm or RLModule checkpoints whose policy is an MLP `pi_encoder` + `pi`
head producing tanh-squashed Gaussian inputs [mean, log_std] (RLlib's SAC and
CQL). Loading an RLlib checkpoint unpickles its module class and constructor
arguments, which can run code: only load RLlib checkpoints you trust. This
project's own checkpoints are tensors only (`weights_only=True`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from rllib_o2o.checkpoints import WEIGHTS_FILE, CheckpointError, load_module_checkpoint

RLLIB_MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"


@dataclass
class ReferenceActor:
    """pi0 as a TanhGaussianActor state dict plus what is needed to rebuild it."""

    state: dict
    hidden: list[int]
    activation: str
    alpha_off: float | None
    kind: str


IMPORTABLE_STAGES = ("offline", "aligned")


def load_reference_actor(path: str | Path, obs_dim: int, act_dim: int, env_id: str | None = None) -> ReferenceActor:
    """pi0 from `path`; refuses a checkpoint whose dims (or, for this project's, stage or env) do not match."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if (path / WEIGHTS_FILE).exists():
        weights, meta = load_module_checkpoint(path)
        if (meta.get("obs_dim"), meta.get("act_dim")) != (obs_dim, act_dim):
            raise CheckpointError(f"{path}: checkpoint is for obs/act dims {meta.get('obs_dim')}/"
                                  f"{meta.get('act_dim')}, the dataset has {obs_dim}/{act_dim}")
        if meta.get("stage") not in IMPORTABLE_STAGES:
            raise CheckpointError(f"{path}: checkpoint has stage={meta.get('stage')!r}, expected one of "
                                  f"{list(IMPORTABLE_STAGES)}")
        if env_id is not None and meta.get("env_id") not in (None, env_id):
            raise CheckpointError(f"{path}: checkpoint was trained on env {meta['env_id']}, the run uses {env_id}")
        if not any(k.startswith("actor.") for k in weights) or not isinstance(meta.get("hidden"), list):
            raise CheckpointError(f"{path}: checkpoint has no actor weights or no hidden sizes in its metadata")
        actor = {k[len("actor."):]: v for k, v in weights.items() if k.startswith("actor.")}
        return ReferenceActor(actor, list(meta["hidden"]), meta.get("actor_activation", "relu"),
                              meta.get("alpha_off"), meta.get("algorithm", "rllib-o2o"))
    module_dir = path / RLLIB_MODULE_SUBDIR if (path / RLLIB_MODULE_SUBDIR).exists() else path
    try:
        from ray.rllib.core.rl_module.rl_module import RLModule

        module = RLModule.from_checkpoint(str(module_dir.resolve()))
    except Exception as err:  # noqa: BLE001 - report any load failure as a checkpoint problem
        raise CheckpointError(f"{path}: not a loadable RLlib checkpoint ({type(err).__name__}: {err})") from None
    state, hidden, activation = actor_from_rllib_module(module, obs_dim, act_dim, str(path))
    return ReferenceActor(state, hidden, activation, None, type(module).__name__)


def actor_from_rllib_module(module, obs_dim: int, act_dim: int, source: str) -> tuple[dict, list[int], str]:
    """Maps the Linear layers of `pi_encoder` then `pi` onto TanhGaussianActor's trunk and head."""
    if not (hasattr(module, "pi_encoder") and hasattr(module, "pi")):
        raise CheckpointError(f"{source}: module {type(module).__name__} has no pi_encoder/pi policy network")
    layers = [m for part in (module.pi_encoder, module.pi) for m in part.modules() if isinstance(m, nn.Linear)]
    activations = {type(m) for part in (module.pi_encoder, module.pi) for m in part.modules()
                   if not list(m.children()) and not isinstance(m, nn.Linear)}
    nonlinear = activations - {nn.Identity}
    if len(nonlinear) > 1 or not nonlinear <= {nn.ReLU, nn.Tanh}:
        raise CheckpointError(f"{source}: policy uses {sorted(a.__name__ for a in activations)}; "
                              "only ReLU or tanh MLPs can be imported")
    activation = "tanh" if nonlinear == {nn.Tanh} else "relu"
    if layers[0].in_features != obs_dim or layers[-1].out_features != 2 * act_dim:
        raise CheckpointError(f"{source}: policy maps {layers[0].in_features} -> {layers[-1].out_features}, "
                              f"expected {obs_dim} -> {2 * act_dim} (tanh-Gaussian mean and log-std)")
    state = {}
    for i, layer in enumerate(layers[:-1]):
        state[f"trunk.{2 * i}.weight"] = layer.weight.detach().cpu().numpy()
        state[f"trunk.{2 * i}.bias"] = layer.bias.detach().cpu().numpy()
    state["head.weight"] = layers[-1].weight.detach().cpu().numpy()
    state["head.bias"] = layers[-1].bias.detach().cpu().numpy()
    return state, [int(layer.out_features) for layer in layers[:-1]], activation


