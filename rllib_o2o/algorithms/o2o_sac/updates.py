"""The gradient update of each method: SAC, and the methods that change SAC in one place.

`SACUpdate` is soft actor-critic's update (Haarnoja et al. 2018): the critic to the soft TD
target, the actor on alpha log pi - Q, the temperature to a target entropy. Each method is a
subclass that overrides the hook for the one thing it changes, as d3rlpy's `CalQLImpl` overrides
one method of CQL's: SAC+ML the actor's loss, CQL the critic's penalty, Balanced Replay a step
after the update, ACA the terms of pi0 (TD target, actor, temperature). The equations are in
`rllib_o2o.maths`; the learner (`o2o_sac_learner.py`) runs the U-step loop, the optimizer steps
and the Polyak update, and compiles `critic_loss` and `actor_loss` when asked to.

The config picks the class (`O2OSACConfig.o2o(update=...)`); an update reads its settings from
that config. Every hook's output enters the losses in the order the equations add it, so a
method's update does the same arithmetic and the same random draws, in the same order, as the
loss it replaces.
"""

from __future__ import annotations

import math

import torch

from rllib_o2o import maths, metrics


class SACUpdate:
    """Plain SAC; the base every method's update overrides one hook of."""

    # True: the module has Balanced Replay's density-ratio network, trained by `after_step`.
    uses_density_ratio = False
    # True: the module has a state-value network V(s), fitted with the critic in `critic_loss` (IQL).
    uses_state_value = False
    # False: the temperature takes no step (a method whose losses have no entropy term, IQL).
    learns_temperature = True
    # > 0: each batch takes this fraction of its rows from the offline data, the rest from the online
    # rows (RLPD's symmetric sampling, `replay.SymmetricReplayBuffer`); 0: one buffer sampled uniformly.
    offline_batch_fraction = 0.0
    # True: the TD target's next-state value keeps the entropy term -alpha log pi(a'|s') (SAC's soft
    # target); False: r + gamma min Q(s', a') (WSRL's, whose SAC sets backup_entropy off).
    backup_entropy = True
    # True: the policy the stage starts from is pi0 of the learner's drift diagnostics (online stages).
    reports_drift = True
    # The temperature an online stage of this update starts at; None: the one it is handed (naive transfer).
    start_temperature: float | None = None
    # The actor's gradient-norm clip an online stage of this update uses; None: none.
    actor_grad_clip: float | None = None
    # The actor's and the temperature's Adam learning rates of an online stage; None: the config's (3e-4).
    actor_lr: float | None = None
    alpha_lr: float | None = None

    @classmethod
    def replays_offline_data(cls) -> bool:
        """Whether an online stage of this update keeps the whole offline dataset in its replay buffer."""
        return cls.uses_density_ratio or cls.offline_batch_fraction > 0

    def __init__(self, config):
        self.config = config

    # -- hooks -------------------------------------------------------------------------------
    def schedule(self, update: int) -> tuple[float, float]:
        """This update's (w_t, beta_t): the weights of pi0's terms, which travel with the batch as
        tensors (a compiled loss then neither recompiles nor re-records for a new w_t). SAC has none."""
        return 0.0, 0.0

    def reference(self, module, obs: torch.Tensor):
        """pi0's (mean, log_std) at the batch's states, computed once per update; None without pi0 terms."""
        return None

    def next_state_value(self, module, b: dict, next_q: torch.Tensor, next_act: torch.Tensor,
                         with_bonus: bool) -> torch.Tensor:
        """The TD target's next-state value min_i Qbar_i(s', a'), a' ~ pi(.|s'), plus any method's terms."""
        return next_q

    def fitted_value(self, module, b: dict, q: torch.Tensor, reference) -> torch.Tensor:
        """What the critic's loss compares with the TD target: Q(s, a)."""
        return q

    def critic_penalty(self, module, b: dict, q: torch.Tensor, out: dict) -> torch.Tensor | None:
        """A term added to the critic's loss (its metrics into `out`); None: none."""
        return None

    def policy_loss(self, module, b: dict, alpha, logp: torch.Tensor, q_pi: torch.Tensor, mean: torch.Tensor,
                    log_std: torch.Tensor, pi_act: torch.Tensor, reference, out: dict) -> torch.Tensor:
        """The actor's loss from reparameterised actions a ~ pi(.|s): E[alpha log pi(a|s) - Q(s, a)]."""
        return maths.sac_actor_loss(alpha, logp, q_pi)

    def entropy_target(self, module, reference):
        """The temperature's target entropy: -c_H |A|."""
        return -float(self.config.entropy_scale) * module.act_dim

    def step_metrics(self, weights: tuple[float, float]) -> dict:
        """Metrics of this update that come from `schedule`, not from the losses."""
        return {}

    def after_step(self, module, b: dict, optimizers: dict) -> dict:
        """Work after the critic, actor and temperature steps; returns metrics. None in SAC."""
        return {}

    # -- the losses (the learner compiles these two) --------------------------------------------
    def critic_loss(self, module, b: dict, alpha, with_bonus: bool):
        """The critic's loss against its soft TD target; returns (loss, `reference`, metrics).

        `with_bonus`: whether this update's beta_t is non-zero (a Python bool, so that a compiled
        loss specialises on it instead of multiplying by a zero)."""
        obs, act = b["obs"], b["actions"]
        with torch.no_grad():
            next_mean, next_log_std = module.actor(b["new_obs"])
            next_act, next_logp = maths.tanh_gaussian_rsample(next_mean, next_log_std)
            next_q = maths.min_over_members(module.q_values(b["new_obs"], next_act, target=True,
                                                            members=self._target_members(obs.device)))
            next_q = self.next_state_value(module, b, next_q, next_act, with_bonus)
            y = maths.soft_q_target(b["rewards"], b["terminateds"], self.config.gamma, next_q, next_logp,
                                    alpha if self.backup_entropy else 0.0)
            reference = self.reference(module, obs)
        q = module.q_values(obs, act)
        loss = maths.critic_loss(self.fitted_value(module, b, q, reference), y)
        out = {metrics.TD_ERROR_RMS: (loss.detach() / q.shape[0]).sqrt(), metrics.Q_MEAN: q.detach().mean()}
        penalty = self.critic_penalty(module, b, q, out)
        if penalty is not None:
            loss = loss + penalty
        return loss, reference, out

    def actor_loss(self, module, b: dict, alpha, reference):
        """The actor's loss on reparameterised actions at the batch's states; returns (loss, log pi of
        those actions, metrics)."""
        obs = b["obs"]
        mean, log_std = module.actor(obs)
        sample = (maths.tanh_gaussian_rsample_path_only if self.config.path_only_log_prob
                  else maths.tanh_gaussian_rsample)
        pi_act, logp = sample(mean, log_std)
        q_members = module.q_values(obs, pi_act)
        q_pi = q_members.mean(0) if self.config.actor_q_reduction == "mean" else q_members.min(0).values
        out = {metrics.LOG_PROB: logp.detach().mean()}
        loss = self.policy_loss(module, b, alpha, logp, q_pi, mean, log_std, pi_act, reference, out)
        return loss, logp, out

    def _target_members(self, device) -> torch.Tensor | None:
        """The members whose min is the TD target's next-state value this update; None: all."""
        config = self.config
        if config.critic_target_members is None or config.critic_target_members == config.num_critics:
            return None
        return torch.randperm(config.num_critics, device=device)[:config.critic_target_members]


class SACMLUpdate(SACUpdate):
    """Offline SAC+ML (stage 1): the actor's loss adds a maximum-likelihood term on the data's actions."""

    reports_drift = False

    def policy_loss(self, module, b, alpha, logp, q_pi, mean, log_std, pi_act, reference, out):
        """E[alpha log pi - lambda Q] - E_D[log pi(a_D|s)], lambda = alpha_bc / mean |Q| (`maths.ml_actor_loss`)."""
        data_logp = maths.tanh_gaussian_log_prob(mean, log_std, b["actions"])
        loss, lam = maths.ml_actor_loss(alpha, logp, q_pi, data_logp, self.config.alpha_bc)
        out[metrics.ML_LAMBDA] = lam.detach()
        out[metrics.DATA_LOG_PROB] = data_logp.detach().mean()
        return loss


class CQLUpdate(SACUpdate):
    """Offline CQL(H) (Kumar et al. 2020), the cql-sac baseline's stage 1: the critic's loss adds the
    conservative penalty."""

    reports_drift = False

    def critic_penalty(self, module, b, q, out):
        """cql_weight * CQL(H): N uniform actions and N policy actions at s and at s', importance-weighted."""
        config = self.config
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
        q_sampled = module.q_values(repeated_obs.reshape(-1, obs_dim), actions.reshape(-1, act_dim))
        q_sampled = q_sampled.reshape(q_sampled.shape[0], actions.shape[0], batch) - torch.cat(logps)  # [E, 3N, B]
        penalty = maths.cql_penalty(q_sampled.transpose(1, 2), q, config.cql_temperature)
        out[metrics.CQL_PENALTY] = penalty.detach()
        return config.cql_weight * penalty


class IQLUpdate(SACUpdate):
    """Offline IQL (Kostrikov et al. 2022), stage 1's `iql`: Q to r + gamma V(s'), V to an expectile
    of the target critics' values of the data's actions, and the actor by advantage-weighted
    likelihood of the data's actions. No loss evaluates an action outside the data, and none has an
    entropy term (the temperature stays put). The critic's step carries V (one Adam over disjoint
    parameters is two Adams), and the advantages computed there, with V before its step as IQL's
    reference implementations do, are what its actor's loss takes."""

    uses_state_value = True
    learns_temperature = False
    reports_drift = False

    def critic_loss(self, module, b, alpha, with_bonus):
        """sum_i MSE(Q_i(s, a), r + gamma (1 - d) V(s')) + the expectile loss of V (`maths.expectile_loss`);
        returns (loss, the data's advantages min_i Qbar_i(s, a) - V(s), metrics)."""
        config = self.config
        obs, act = b["obs"], b["actions"]
        with torch.no_grad():
            y = maths.state_value_target(b["rewards"], b["terminateds"], config.gamma,
                                         module.state_values(b["new_obs"]))
            target_q = maths.min_over_members(module.q_values(obs, act, target=True))
        v = module.state_values(obs)
        advantage = target_q - v
        value_loss = maths.expectile_loss(advantage, config.iql_expectile)
        q = module.q_values(obs, act)
        q_loss = maths.critic_loss(q, y)
        out = {metrics.TD_ERROR_RMS: (q_loss.detach() / q.shape[0]).sqrt(), metrics.Q_MEAN: q.detach().mean(),
               metrics.VALUE_LOSS: value_loss.detach(), metrics.V_MEAN: v.detach().mean(),
               metrics.ADVANTAGE_MEAN: advantage.detach().mean()}
        return q_loss + value_loss, advantage.detach(), out

    def actor_loss(self, module, b, alpha, advantage):
        """-E_D[min(exp(beta s A), w_max) log pi(a|s)] (`maths.awr_actor_loss`), s the data's return scale
        (`iql_advantage_scale`); returns (loss, None: no temperature step, metrics)."""
        config = self.config
        mean, log_std = module.actor(b["obs"])
        data_logp = maths.tanh_gaussian_log_prob(mean, log_std, b["actions"])
        weights = maths.advantage_weights(advantage * config.iql_advantage_scale, config.iql_temperature,
                                          config.iql_max_weight)
        out = {metrics.DATA_LOG_PROB: data_logp.detach().mean(), metrics.AWR_WEIGHT_MEAN: weights.mean()}
        return maths.awr_actor_loss(weights, data_logp), None, out


class BalancedReplayUpdate(SACUpdate):
    """Balanced Replay (Lee et al. 2022) online: SAC, then one step of the density-ratio estimator and
    the new replay priorities of the batch's rows."""

    uses_density_ratio = True

    def after_step(self, module, b, optimizers):
        """One step of w(s, a) ~ d_online / d_offline on uniform offline and online batches, then the RL
        batch's priorities from the updated w (`maths.balanced_replay_priority`)."""
        w_offline = module.density_ratios(b["offline_obs"], b["offline_actions"])
        w_online = module.density_ratios(b["online_obs"], b["online_actions"])
        loss = maths.density_ratio_loss(w_offline, w_online)
        optimizers["density"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["density"].step()
        with torch.no_grad():
            w_offline = module.density_ratios(b["offline_obs"], b["offline_actions"])
            w_batch = module.density_ratios(b["obs"], b["actions"])
        return {
            metrics.PRIORITIES: maths.balanced_replay_priority(w_batch, w_offline,
                                                               self.config.balanced_replay_temperature),
            metrics.DENSITY_LOSS: loss.detach(),
            metrics.DENSITY_RATIO_OFFLINE: w_offline.mean(),
            metrics.DENSITY_RATIO_ONLINE: w_online.detach().mean(),
        }


class RLPDUpdate(SACUpdate):
    """RLPD (Ball et al. 2023, ikostrikov/rlpd) online: SAC from scratch on symmetric batches (half offline
    rows, half online), with the settings its method gives the config (a layer-normalised ensemble of 10,
    the target's min over a random pair, the actor on the members' mean, 20 critic steps per env step);
    the temperature's target entropy is RLPD's -|A|/2."""

    offline_batch_fraction = 0.5

    def entropy_target(self, module, reference):
        """-|A| / 2 (RLPD's `target_entropy = -action_dim / 2`)."""
        return -0.5 * module.act_dim


class WSRLUpdate(SACUpdate):
    """WSRL (Zhou et al. 2024, zhouzypaul/wsrl) online: SAC from the CQL pre-training's actor, critic
    ensemble and temperature, with no offline data; the warm-up and the update ratio are its method's
    settings. Its SAC's target has no entropy term (`backup_entropy` off), and the actor and temperature
    learn at 1e-4 (the critic at 3e-4)."""

    backup_entropy = False
    actor_lr = 1e-4
    alpha_lr = 1e-4


class ACAUpdate(SACUpdate):
    """ACA online (docs/method.md): SAC regularised towards the frozen offline actor pi0 by
    l(s, a) = clip(log pi0(a|s)), weighted by w_t, in the TD target's next-state value and the actor's
    loss (and, with `critic_includes_reference`, the critic's fitted value); optionally the offline
    critic's entropy bonus beta_t H(pi0(.|s')) in the target and pi0's entropy as the temperature's target.
    """

    start_temperature = 1.0  # spec, stage 2.4: log alpha = 0 at the hand-over, whatever the critic
    actor_grad_clip = 0.25  # the reference code's

    def schedule(self, update):
        """(w_t, beta_t = beta_0 w_t / w_0): `maths.reference_weight` and the bonus annealed with it."""
        config = self.config
        weight = maths.reference_weight(update, *config.w_schedule)
        w0 = config.w_schedule[0]
        return weight, config.offline_entropy_bonus * (weight / w0 if w0 else 1.0)

    def reference(self, module, obs):
        return module.ref_actor(obs)

    def next_state_value(self, module, b, next_q, next_act, with_bonus):
        """+ w_t l(s', a') (+ beta_t H(pi0(.|s')) from one a0 ~ pi0(.|s'), `maths.offline_entropy_bonus`)."""
        ref_at_next = module.ref_actor(b["new_obs"])
        next_q = next_q + b["reference_weight"] * self._reference_term(b["new_obs"], next_act, ref_at_next)
        if with_bonus:
            ref_log_prob = maths.tanh_gaussian_rsample(*ref_at_next)[1]
            next_q = next_q + maths.offline_entropy_bonus(b["offline_entropy_bonus_weight"], ref_log_prob)
        return next_q

    def fitted_value(self, module, b, q, reference):
        """The spec fits R + w l to the target; with `critic_includes_reference` False, R alone (w l stays
        in the actor's loss and the target's next-state value)."""
        if not self.config.critic_includes_reference:
            return q
        with torch.no_grad():
            offset = self._reference_term(b["obs"], b["actions"], reference) * b["reference_weight"]
        return q + offset

    def policy_loss(self, module, b, alpha, logp, q_pi, mean, log_std, pi_act, reference, out):
        """E[alpha log pi - Q - w_t l(s, a)] (`maths.aca_actor_loss`)."""
        l_pi = self._reference_term(b["obs"], pi_act, reference)
        return maths.aca_actor_loss(alpha, logp, q_pi, b["reference_weight"], l_pi)

    def entropy_target(self, module, reference):
        """With `reference_entropy_target`: pi0's entropy at the batch's states, -log pi0(a0|s) for one
        a0 ~ pi0(.|s) each, so that the temperature, like the actor, is stationary at pi = pi0."""
        if not self.config.reference_entropy_target:
            return super().entropy_target(module, reference)
        with torch.no_grad():
            return -maths.tanh_gaussian_rsample(*reference)[1]

    def step_metrics(self, weights):
        weight, bonus_weight = weights
        return {metrics.REFERENCE_WEIGHT: torch.tensor(weight),
                metrics.OFFLINE_ENTROPY_BONUS_WEIGHT: torch.tensor(bonus_weight)}

    def _reference_term(self, obs, act, reference):
        """l(s, a): pi0's log-likelihood at pi0's (mean, log_std) `reference`, smoothly clipped from below
        at beta std-devs (`maths.clipped_log_prob`), or raw (`use_log_prob_clip` False, an ablation)."""
        ref_mean, ref_log_std = reference
        log_pi0 = maths.tanh_gaussian_log_prob(ref_mean, ref_log_std, act)
        if not self.config.use_log_prob_clip:
            return log_pi0
        threshold = maths.log_prob_clip_threshold(ref_mean, ref_log_std, self.config.clip_beta)
        return maths.clipped_log_prob(log_pi0, threshold)
