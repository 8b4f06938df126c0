"""One SAC-family learner for every method: SAC, SAC+ML (offline), ACA (online)
and, for the cql-sac baseline, SAC with CQL's conservative critic penalty.

The method-specific terms are switches (`config.o2o_mode`) on one loss; the
equations themselves live in `rllib_o2o.maths`. Updates run through
`o2o_update`, which takes ready, stacked numpy batches ([U, B, ...]) and runs U
gradient steps in one call: no per-update episode-to-batch connector work, no
per-update metrics reduction. `Learner.update()` is not used by this family.

With RLlib's `config.framework(torch_compile_learner=True, ...)` the two losses of each update
(`_critic_loss`, `_actor_loss`: the forward passes, targets and loss terms, and through
AOTAutograd their backward passes) run under `torch.compile` with the config's dynamo backend
and mode ("reduce-overhead": CUDA graphs on a GPU); the optimizer steps, the temperature's loss,
the Polyak update and the Balanced Replay density step stay eager. Off (RLlib's default), the
same functions run eagerly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID

from rllib_o2o import maths

MODES = ("sac", "sacml", "aca", "cql")
ONLINE_MODES = ("sac", "aca")  # modes whose reference actor is the policy the run started from
ACTOR_Q_REDUCTIONS = ("min", "mean")  # how the actor's objective reduces the critic ensemble


def aca_weights(config, update: int) -> tuple[float, float]:
    """ACA's reference weight w_t at update t and the TD target's state-bonus weight
    beta_t = beta_0 w_t / w_0; (0, 0) in the other modes."""
    if config.o2o_mode != "aca":
        return 0.0, 0.0
    weight = maths.reference_weight(update, *config.w_schedule)
    w0 = config.w_schedule[0]
    return weight, config.offline_entropy_bonus * (weight / w0 if w0 else 1.0)


def compiled(fn, config):
    """`fn` under `torch.compile` with RLlib's learner knobs (`torch_compile_learner_dynamo_backend`,
    `torch_compile_learner_dynamo_mode`) when `config.torch_compile_learner` is set, else `fn`."""
    if not config.torch_compile_learner:
        return fn
    return torch.compile(fn, backend=config.torch_compile_learner_dynamo_backend,
                         mode=config.torch_compile_learner_dynamo_mode)


class O2OSACTorchLearner(SACTorchLearner):
    @override(SACTorchLearner)
    def build(self) -> None:
        super().build()
        # The per-update losses, compiled once here when torch_compile_learner is set (`compiled`).
        self._critic_loss_fn = compiled(self._critic_loss, self.config)
        self._actor_loss_fn = compiled(self._actor_loss, self.config)

    def configure_optimizers_for_module(self, module_id: ModuleID, config=None) -> None:
        module = self._module[module_id]
        groups = {
            "critic": (list(module.critic.parameters()), config.critic_lr),
            "actor": (list(module.actor.parameters()), config.actor_lr),
            "alpha": ([module.log_alpha], config.alpha_lr),
        }
        if config.balanced_replay:
            groups["density"] = (list(module.density_ratio.parameters()), config.density_lr)
        for name, (params, lr) in groups.items():
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=lr,
            )

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        raise NotImplementedError(
            "O2OSACTorchLearner trains through `o2o_update` (stacked tensor batches); "
            "use the O2OSAC algorithm's training_step rather than Learner.update()."
        )

    # -- the fast path -----------------------------------------------------------
    def o2o_update(self, batch: dict[str, np.ndarray], module_id: ModuleID = "default_policy") -> dict:
        """Runs U = batch["rewards"].shape[0] gradient steps; returns mean metrics."""
        module = self._module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        names = ("critic", "actor", "alpha") + (("density",) if config.balanced_replay else ())
        optim = {name: self.get_optimizer(module_id, name) for name in names}
        num_updates = len(batch["rewards"])
        start = int(module.num_updates)
        schedule = [aca_weights(config, start + u) for u in range(num_updates)]
        # w_t and beta_t of each update travel with the batch: a compiled loss takes them as tensor
        # inputs, so a changing w_t neither recompiles it nor re-records its CUDA graph.
        weights = np.asarray(schedule, np.float32).reshape(num_updates, 2)
        batch = {**batch, "reference_weight": weights[:, 0], "offline_entropy_bonus_weight": weights[:, 1]}
        tensors = {k: torch.from_numpy(np.asarray(v)).to(self._device) for k, v in batch.items()}
        target_entropy = -float(config.entropy_scale) * module.act_dim
        actor_params = list(module.actor.parameters())
        critic_params = list(module.critic.parameters())
        target_params = list(module.target_critic.parameters())
        totals: dict[str, torch.Tensor] = {}
        priorities = []
        for u in range(num_updates):
            if config.torch_compile_learner:  # CUDA graphs ("reduce-overhead"): one update is one step
                torch.compiler.cudagraph_mark_step_begin()
            step = self._one_update(
                module, config, {k: v[u] for k, v in tensors.items()}, schedule[u], target_entropy,
                optim, actor_params, critic_params, train_policy=start + u >= config.actor_warmup_updates,
            )
            maths.polyak_update_(target_params, critic_params, config.tau)
            if config.balanced_replay:
                priorities.append(step.pop("priorities"))
            for k, v in step.items():
                totals[k] = totals.get(k, 0.0) + v
        module.num_updates += num_updates
        metrics = {k: float(v) / num_updates for k, v in totals.items()}
        if config.o2o_mode in ONLINE_MODES:
            metrics.update(self._diagnostics(module, tensors["obs"][-1]))
        metrics["num_updates_lifetime"] = int(module.num_updates)
        if priorities:  # not a metric: the algorithm writes them back into the replay buffer
            metrics["priorities"] = torch.stack(priorities).cpu().numpy()
        return metrics

    def _one_update(self, module, config, b, weights, target_entropy, optim, actor_params, critic_params,
                    train_policy: bool = True):
        """One critic step, then (unless `train_policy` is False: the critic's warm-up) one actor
        and one temperature step. `weights`: this update's (w_t, beta_t), `aca_weights`; `b` holds
        them as tensors too."""
        alpha = module.log_alpha.exp().detach()
        aca = config.o2o_mode == "aca"
        weight, bonus_weight = weights

        critic_loss, ref_at_obs, out = self._critic_loss_fn(module, config, b, alpha, bool(bonus_weight))
        optim["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        optim["critic"].step()

        actor_loss, logp, actor_out = self._actor_loss_fn(module, config, b, alpha, ref_at_obs)
        out.update(actor_out)
        if aca:
            out["reference_weight"] = torch.tensor(weight)
            out["offline_entropy_bonus_weight"] = torch.tensor(bonus_weight)
        if train_policy:
            optim["actor"].zero_grad(set_to_none=True)
            actor_loss.backward(inputs=actor_params)
            if config.actor_grad_clip:
                torch.nn.utils.clip_grad_norm_(actor_params, config.actor_grad_clip)
            optim["actor"].step()

        if aca and config.reference_entropy_target:
            with torch.no_grad():
                target_entropy = -maths.tanh_gaussian_rsample(*ref_at_obs)[1]
        alpha_loss = maths.temperature_loss(module.log_alpha, logp.detach(), target_entropy)
        if train_policy:
            optim["alpha"].zero_grad(set_to_none=True)
            alpha_loss.backward()
            optim["alpha"].step()

        if config.balanced_replay:
            out.update(self._density_ratio_step(module, config, b, optim["density"]))

        out.update(critic_loss=critic_loss.detach(), actor_loss=actor_loss.detach(), alpha=alpha)
        return out

    def _critic_loss(self, module, config, b, alpha, with_bonus: bool):
        """The critic's loss of one update against its soft TD target (with the state bonus
        beta_t H(pi0(.|s')) if `with_bonus`); returns (loss, pi0's (mean, log_std) at the batch's
        states or None outside "aca" mode, metrics)."""
        obs, act, weight = b["obs"], b["actions"], b["reference_weight"]
        aca = config.o2o_mode == "aca"
        with torch.no_grad():
            next_mean, next_log_std = module.actor(b["new_obs"])
            next_act, next_logp = maths.tanh_gaussian_rsample(next_mean, next_log_std)
            next_q = maths.min_over_members(module.q_values(b["new_obs"], next_act, target=True),
                                            self._target_members(config, obs.device))
            if aca:
                ref_at_next = module.ref_actor(b["new_obs"])
                next_q = next_q + weight * self._reference_term(module, config, b["new_obs"], next_act, ref_at_next)
                if with_bonus:
                    ref_log_prob = maths.tanh_gaussian_rsample(*ref_at_next)[1]
                    next_q = next_q + maths.offline_entropy_bonus(b["offline_entropy_bonus_weight"], ref_log_prob)
            y = maths.soft_q_target(b["rewards"], b["terminateds"], config.gamma, next_q, next_logp, alpha)
            # The spec fits R + w l to y; with critic_includes_reference=False R alone is fitted
            # (w l stays in the actor's objective and in the next-state value of y).
            fits_reference = aca and config.critic_includes_reference
            ref_at_obs = module.ref_actor(obs) if aca else None  # pi0 at the batch's states, used up to 3 times
            data_ref_term = (self._reference_term(module, config, obs, act, ref_at_obs) * weight
                             if fits_reference else 0.0)

        q = module.q_values(obs, act)
        critic_loss = maths.critic_loss(q + data_ref_term, y)
        out = {"td_error_rms": (critic_loss.detach() / q.shape[0]).sqrt(), "q_mean": q.detach().mean()}
        if config.o2o_mode == "cql":
            penalty = self._cql_penalty(module, config, b, q)
            critic_loss = critic_loss + config.cql_weight * penalty
            out["cql_penalty"] = penalty.detach()
        return critic_loss, ref_at_obs, out

    def _actor_loss(self, module, config, b, alpha, ref_at_obs):
        """The actor's loss of one update on reparameterised actions at the batch's states; returns
        (loss, log pi of those actions, metrics)."""
        obs, weight = b["obs"], b["reference_weight"]
        mean, log_std = module.actor(obs)
        sample = maths.tanh_gaussian_rsample_path_only if config.path_only_log_prob else maths.tanh_gaussian_rsample
        pi_act, logp = sample(mean, log_std)
        q_members = module.q_values(obs, pi_act)
        q_pi = q_members.mean(0) if config.actor_q_reduction == "mean" else q_members.min(0).values
        out = {"log_prob": logp.detach().mean()}
        if config.o2o_mode == "aca":
            l_pi = self._reference_term(module, config, obs, pi_act, ref_at_obs)
            actor_loss = maths.aca_actor_loss(alpha, logp, q_pi, weight, l_pi)
        elif config.o2o_mode == "sacml":
            data_logp = maths.tanh_gaussian_log_prob(mean, log_std, b["actions"])
            actor_loss, lam = maths.ml_actor_loss(alpha, logp, q_pi, data_logp, config.alpha_bc)
            out["ml_lambda"] = lam.detach()
            out["data_log_prob"] = data_logp.detach().mean()
        else:
            actor_loss = maths.sac_actor_loss(alpha, logp, q_pi)
        return actor_loss, logp, out

    @staticmethod
    def _target_members(config, device) -> torch.Tensor | None:
        """The members whose min is the TD target's next-state value this update; None: all."""
        if config.critic_target_members is None or config.critic_target_members == config.num_critics:
            return None
        return torch.randperm(config.num_critics, device=device)[:config.critic_target_members]

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
            "kl_to_reference": maths.tanh_gaussian_kl(mean, log_std, ref_mean, ref_log_std).mean(),
            "mean_action_shift": (action - torch.tanh(ref_mean)).abs().mean(),
            "mean_action_saturated": (action.abs() > 0.99).float().mean(),
            "policy_std": log_std.exp().mean(),
            "critic_action_weight_norm": module.critic.weights[0][:, module.obs_dim:, :].norm(),
        }

    @staticmethod
    def _density_ratio_step(module, config, b, optimizer) -> dict:
        """Balanced Replay: one step of the density-ratio estimator on uniform offline and
        online batches, then the new priorities of the RL batch's rows (from the updated w)."""
        w_offline = module.density_ratios(b["offline_obs"], b["offline_actions"])
        w_online = module.density_ratios(b["online_obs"], b["online_actions"])
        loss = maths.density_ratio_loss(w_offline, w_online)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            w_offline = module.density_ratios(b["offline_obs"], b["offline_actions"])
            w_batch = module.density_ratios(b["obs"], b["actions"])
        return {
            "priorities": maths.balanced_replay_priority(w_batch, w_offline, config.balanced_replay_temperature),
            "density_loss": loss.detach(),
            "density_ratio_offline": w_offline.mean(),
            "density_ratio_online": w_online.detach().mean(),
        }

    @staticmethod
    def _cql_penalty(module, config, b, q_data):
        """CQL(H): N uniform actions and N policy actions at s and at s', importance-weighted."""
        obs, next_obs = b["obs"], b["new_obs"]
        n, (batch, obs_dim), act_dim = config.cql_num_actions, obs.shape, module.act_dim
        with torch.no_grad():
            uniform = torch.rand(n, batch, act_dim, device=obs.device) * 2.0 - 1.0
            uniform_logp = torch.full((n, batch), -act_dim * math.log(2.0), device=obs.device)
            sampled, logps = [uniform], [uniform_logp]
            for states in (obs, next_obs):
                mean, log_std = module.actor(states)
                act, logp = maths.tanh_gaussian_rsample(mean.expand(n, -1, -1), log_std.expand(n, -1, -1))
                sampled.append(act)
                logps.append(logp)
        actions = torch.cat(sampled)  # [3N, B, A]
        repeated_obs = obs.expand(actions.shape[0], -1, -1)
        q = module.q_values(repeated_obs.reshape(-1, obs_dim), actions.reshape(-1, act_dim))
        q = q.reshape(q.shape[0], actions.shape[0], batch) - torch.cat(logps)  # [E, 3N, B]
        return maths.cql_penalty(q.transpose(1, 2), q_data, config.cql_temperature)

    @staticmethod
    def _reference_term(module, config, obs, act, reference=None):
        """l(s, a): pi0's log-likelihood, smoothly clipped from below (or raw, ablation); `reference`:
        pi0's (mean, log_std) at obs, when the caller has it already."""
        ref_mean, ref_log_std = module.ref_actor(obs) if reference is None else reference
        log_pi0 = maths.tanh_gaussian_log_prob(ref_mean, ref_log_std, act)
        if not config.use_log_prob_clip:
            return log_pi0
        threshold = maths.log_prob_clip_threshold(ref_mean, ref_log_std, config.clip_beta)
        return maths.clipped_log_prob(log_pi0, threshold)

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


