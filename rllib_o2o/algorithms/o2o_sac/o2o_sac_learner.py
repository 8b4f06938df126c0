"""One learner for every method of the SAC family: it runs each method's update class.

The update of a method (`updates.py`: SAC, SAC+ML, CQL, Balanced Replay, ACA) is the class
`config.update_class`; this learner owns what every update shares: the optimizers, the U-step
loop, the order of the critic, actor and temperature steps, the Polyak update and the online
diagnostics. Updates run through `o2o_update`, which takes ready, stacked numpy batches
([U, B, ...]) and runs U gradient steps in one call: no per-update episode-to-batch connector
work, no per-update metrics reduction. `Learner.update()` (a single loss with one gradient step)
does not fit this family's three sequential steps, so it is not supported.

With RLlib's `config.framework(torch_compile_learner=True, ...)` the two losses of each update
(the update's `critic_loss` and `actor_loss`: the forward passes, targets and loss terms, and
through AOTAutograd their backward passes) run under `torch.compile` with the config's dynamo
backend and mode ("reduce-overhead": CUDA graphs on a GPU); the optimizer steps, the temperature's
loss, the Polyak update and the update's `after_step` stay eager. Off (RLlib's default), the same
functions run eagerly.
"""

from __future__ import annotations

import numpy as np
import torch

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID

from rllib_o2o import maths, metrics

ACTOR_Q_REDUCTIONS = ("min", "mean")  # how the actor's objective reduces the critic ensemble


def compiled(fn, config):
    """`fn` under `torch.compile` with RLlib's learner knobs (`torch_compile_learner_dynamo_backend`,
    `torch_compile_learner_dynamo_mode`) when `config.torch_compile_learner` is set, else `fn`."""
    if not config.torch_compile_learner:
        return fn
    return torch.compile(fn, backend=config.torch_compile_learner_dynamo_backend,
                         mode=config.torch_compile_learner_dynamo_mode)


class O2OSACTorchLearner(TorchLearner):
    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self.module.foreach_module(
            lambda module_id, module: module.make_target_networks() if isinstance(module, TargetNetworkAPI) else None)
        self._update = self.config.update_class(self.config)
        # The update's losses, compiled once here when torch_compile_learner is set (`compiled`).
        self._critic_loss_fn = compiled(self._update.critic_loss, self.config)
        self._actor_loss_fn = compiled(self._update.actor_loss, self.config)
        # The actor's learning rate before any decay (`actor_lr_decay_updates`).
        self._actor_base_lr = self._update.actor_lr or self.config.actor_lr

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config=None) -> None:
        module = self._module[module_id]
        update = config.update_class
        critic_params = list(module.critic.parameters())
        if update.uses_state_value:  # V steps with the critic (IQLUpdate.critic_loss sums their losses)
            critic_params += list(module.state_value.parameters())
        groups = {
            "critic": (critic_params, config.critic_lr),
            "actor": (list(module.actor.parameters()), update.actor_lr or config.actor_lr),
            "alpha": ([module.log_alpha], update.alpha_lr or config.alpha_lr),
        }
        if config.update_class.uses_density_ratio:
            groups["density"] = (list(module.density_ratio.parameters()), config.density_lr)
        for name, (params, lr) in groups.items():
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=lr,
            )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        raise NotImplementedError(
            "O2OSACTorchLearner trains through `o2o_update` (stacked tensor batches); "
            "use the O2OSAC algorithm's training_step rather than Learner.update()."
        )

    # -- the fast path -----------------------------------------------------------
    def o2o_update(self, batch: dict[str, np.ndarray], module_id: ModuleID = "default_policy") -> dict:
        """Runs U = batch["rewards"].shape[0] gradient steps of the config's update class; returns mean metrics."""
        module = self._module[module_id].unwrapped()
        update = self._update
        config = update.config
        names = ("critic", "actor", "alpha") + (("density",) if update.uses_density_ratio else ())
        optim = {name: self.get_optimizer(module_id, name) for name in names}
        num_updates = len(batch["rewards"])
        start = int(module.num_updates)
        schedule = [update.schedule(start + u) for u in range(num_updates)]
        # w_t and beta_t of each update travel with the batch: a compiled loss takes them as tensor
        # inputs, so a changing w_t neither recompiles it nor re-records its CUDA graph.
        weights = np.asarray(schedule, np.float32).reshape(num_updates, 2)
        batch = {**batch, "reference_weight": weights[:, 0], "offline_entropy_bonus_weight": weights[:, 1]}
        tensors = {k: torch.from_numpy(np.asarray(v)).to(self._device) for k, v in batch.items()}
        actor_params = list(module.actor.parameters())
        critic_params = list(module.critic.parameters())
        target_params = list(module.target_critic.parameters())
        totals: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # a metric of the actor's steps counts only the updates that made one
        priorities = []
        for u in range(num_updates):
            if config.torch_compile_learner:  # CUDA graphs ("reduce-overhead"): one update is one step
                torch.compiler.cudagraph_mark_step_begin()
            if config.actor_lr_decay_updates:
                for group in optim["actor"].param_groups:
                    group["lr"] = maths.cosine_decay(self._actor_base_lr, start + u, config.actor_lr_decay_updates)
            step = self._one_update(
                module, update, {k: v[u] for k, v in tensors.items()}, schedule[u],
                optim, actor_params, critic_params, train_policy=start + u >= config.actor_warmup_updates,
                policy_step=maths.is_policy_update(start + u, config.policy_update_interval),
            )
            if config.actor_ema:
                maths.polyak_update_(module.ema_actor.parameters(), actor_params,
                                     maths.moving_average_rate(config.actor_ema, start + u))
            maths.polyak_update_(target_params, critic_params, config.tau)
            if metrics.PRIORITIES in step:
                priorities.append(step.pop(metrics.PRIORITIES))
            for k, v in step.items():
                totals[k] = totals.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        module.num_updates += num_updates
        results = {k: float(v) / counts[k] for k, v in totals.items()}
        if update.reports_drift:
            results.update(self._diagnostics(module, tensors["obs"][-1]))
        results[metrics.NUM_UPDATES_LIFETIME] = int(module.num_updates)
        if priorities:  # not a metric: the algorithm writes them back into the replay buffer
            results[metrics.PRIORITIES] = torch.stack(priorities).cpu().numpy()
        return results

    def _one_update(self, module, update, b, weights, optim, actor_params, critic_params, train_policy: bool = True,
                    policy_step: bool = True):
        """One critic step, then (unless `train_policy` is False: the critic's warm-up) one actor
        and one temperature step, then the update's `after_step`. `weights`: this update's (w_t, beta_t),
        `update.schedule`; `b` holds them as tensors too. `policy_step` False (a critic update between
        two of the actor's, `policy_update_interval`): the critic's step only, without the actor's losses."""
        alpha = module.log_alpha.exp().detach()
        critic_loss, reference, out = self._critic_loss_fn(module, b, alpha, bool(weights[1]))
        optim["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        optim["critic"].step()
        if policy_step:
            actor_loss, logp, actor_out = self._actor_loss_fn(module, b, alpha, reference)
            out.update(actor_out)
            out.update(update.step_metrics(weights))
            if train_policy:
                optim["actor"].zero_grad(set_to_none=True)
                actor_loss.backward(inputs=actor_params)
                if update.config.actor_grad_clip:
                    torch.nn.utils.clip_grad_norm_(actor_params, update.config.actor_grad_clip)
                optim["actor"].step()

            if update.learns_temperature:
                alpha_loss = maths.temperature_loss(module.log_alpha, logp.detach(),
                                                    update.entropy_target(module, reference))
                if train_policy:
                    optim["alpha"].zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    optim["alpha"].step()
                    maths.temperature_floor_(module.log_alpha, update.config.min_alpha)
            out[metrics.ACTOR_LOSS] = actor_loss.detach()

        out.update(update.after_step(module, b, optim))
        out.update({metrics.CRITIC_LOSS: critic_loss.detach(), metrics.ALPHA: alpha})
        return out

    @staticmethod
    @torch.no_grad()
    def _diagnostics(module, obs: torch.Tensor) -> dict:
        """Where the policy and critic are relative to the hand-over, on one batch of states:
        KL(pi || pi0), the mean action's shift from pi0's and its saturation, the policy's std
        and the norm of the critic's first-layer action rows (zero right after alignment)."""
        mean, log_std = module.actor(obs)
        ref_mean, ref_log_std = module.ref_actor(obs)
        action = torch.tanh(mean)
        return {
            metrics.KL_TO_REFERENCE: maths.tanh_gaussian_kl(mean, log_std, ref_mean, ref_log_std).mean(),
            metrics.MEAN_ACTION_SHIFT: (action - torch.tanh(ref_mean)).abs().mean(),
            metrics.MEAN_ACTION_SATURATED: (action.abs() > 0.99).float().mean(),
            metrics.POLICY_STD: log_std.exp().mean(),
            metrics.CRITIC_ACTION_WEIGHT_NORM: module.critic.weights[0][:, module.obs_dim:, :].norm(),
        }

    @torch.no_grad()
    def value_estimates(self, obs: np.ndarray, module_id: ModuleID = "default_policy") -> dict[str, float]:
        """The critic's value of the actor's mean action on `obs` (`maths.average_value_estimate`), and of
        its moving average's when the module keeps one: {"actor": v, "ema_actor": v}. Draws no random
        number, so the run it is measured in goes on as it would without."""
        module = self._module[module_id].unwrapped()
        states = torch.as_tensor(obs, dtype=torch.float32, device=next(module.critic.parameters()).device)
        actors = {"actor": module.actor, "ema_actor": getattr(module, "ema_actor", None)}
        return {name: float(maths.average_value_estimate(module.q_values(states, torch.tanh(actor(states)[0]))))
                for name, actor in actors.items() if actor is not None}

    # -- state transfer between stages ------------------------------------------
    def get_optimizer_states(self, module_id: ModuleID = "default_policy") -> dict:
        """Adam's state of each parameter group (moments, step counts), as torch state dicts."""
        names = ("critic", "actor", "alpha")
        return {name: self.get_optimizer(module_id, name).state_dict() for name in names}

    def set_optimizer_states(self, states: dict, module_id: ModuleID = "default_policy") -> None:
        """Loads optimizer states by parameter position (as d3rlpy's load_model does), keeping
        this learner's learning rates; a shape mismatch is an error."""
        for name, state in states.items():
            optimizer = self.get_optimizer(module_id, name)
            lrs = [group["lr"] for group in optimizer.param_groups]
            params = [p for group in optimizer.param_groups for p in group["params"]]
            for index, moments in state["state"].items():
                for key in ("exp_avg", "exp_avg_sq"):
                    if moments[key].shape != params[int(index)].shape:
                        raise ValueError(f"{name} optimizer state {index}.{key} has shape "
                                         f"{tuple(moments[key].shape)}, parameter {tuple(params[int(index)].shape)}")
            optimizer.load_state_dict(state)
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr


    def get_module_weights(self, module_id: ModuleID = "default_policy") -> dict:
        module = self._module[module_id].unwrapped()
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    def set_module_weights(self, weights: dict, module_id: ModuleID = "default_policy") -> None:
        """Loads a full state dict strictly: a name mismatch is an error, never a silent no-op.

        The one exception: weights from a stage without a density-ratio network (every
        offline stage) leave this module's freshly initialised one in place.
        """
        module = self._module[module_id].unwrapped()
        state = {k: torch.tensor(np.array(v)) for k, v in weights.items()}
        for key, value in module.state_dict().items():
            if key.startswith("density_ratio.") and key not in state:
                state[key] = value
        module.load_state_dict(state, strict=True)


