"""At the hand-over (t = 0, pi = pi0, w = alpha = 1) the online critic's expected TD target must
equal the aligned critic's value: otherwise the first online updates move R before anything was
learned about the environment.

A one-state MDP (s' = s, never terminal, gamma 0.5) with a state-independent pi0, so every
expectation is over actions only and is estimated with 200k samples. Z is fitted by the
project's `align()`; the online target and reference term are the learner's.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rllib_o2o import maths
from rllib_o2o.algorithms.o2o_sac.updates import ACAUpdate
from rllib_o2o.data.schema import DatasetMeta
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor
from rllib_o2o.algorithms.alignment.z_fit import AlignSettings, align

OBS = torch.tensor([0.3, -0.2])
PI0_MEAN, PI0_LOG_STD = [0.4, -0.6], [-2.0, -1.5]
GAMMA, HIDDEN, SAMPLES = 0.5, (16, 16), 200_000
TOLERANCE = 0.05


def reward(actions: torch.Tensor) -> torch.Tensor:
    return 1.0 + actions[..., 0] - 0.5 * actions[..., 1] ** 2


def state_independent_pi0() -> TanhGaussianActor:
    actor = TanhGaussianActor(2, 2, HIDDEN)
    with torch.no_grad():
        actor.head.weight.zero_()
        actor.head.bias.copy_(torch.tensor(PI0_MEAN + PI0_LOG_STD))
    return actor


def pi0_samples(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    mean, log_std = torch.tensor(PI0_MEAN).expand(num, 2), torch.tensor(PI0_LOG_STD).expand(num, 2)
    return maths.tanh_gaussian_rsample(mean, log_std)


def one_state_dataset(num: int = 4096):
    return dataset_of(pi0_samples(num, seed=1)[0])


def dataset_of(actions: torch.Tensor):
    """The one-state MDP's transitions for these actions, with their dataset meta."""
    num = len(actions)
    obs = OBS.expand(num, 2).numpy().copy()
    transitions = {"obs": obs, "actions": actions.numpy(), "rewards": reward(actions).numpy(),
                   "new_obs": obs.copy(), "terminateds": np.zeros(num, bool)}
    meta = DatasetMeta(env_id=None, obs_shape=(2,), action_shape=(2,), action_low=[-1.0, -1.0],
                       action_high=[1.0, 1.0], source="test", num_transitions=num, num_episodes=1)
    return transitions, meta


def td_gap(z_target_alpha: float, critic_includes_reference: bool) -> tuple[float, float]:
    """E_{a ~ pi0}[y(s, a)] - E_{a ~ pi0}[aligned critic(s, a)] and gamma * H(pi0)."""
    pi0 = state_independent_pi0()
    actor_state = {k: v.numpy() for k, v in pi0.state_dict().items()}
    settings = AlignSettings(z_steps=3000, batch_size=256, lr=3e-3, gamma=GAMMA, alpha_off=z_target_alpha,
                             curve_every=500, seed=0, z_includes_log_pi0=critic_includes_reference)
    report = align(actor_state, one_state_dataset(), HIDDEN, settings)
    weights = {k[len("critic."):]: torch.tensor(v) for k, v in report["weights"].items() if k.startswith("critic.")}
    critic = EnsembleMLP(2, 4, 1, HIDDEN)
    critic.load_state_dict(weights)
    module = SimpleNamespace(ref_actor=pi0, q_values=lambda o, a: critic(torch.cat([o, a], -1)).squeeze(-1))
    config = SimpleNamespace(clip_beta=7.0, use_log_prob_clip=True)
    w = alpha = 1.0
    obs = OBS.expand(SAMPLES, 2)
    with torch.no_grad():
        actions, _ = pi0_samples(SAMPLES, seed=2)
        next_actions, next_log_pi = pi0_samples(SAMPLES, seed=3)  # pi = pi0 at t = 0
        fitted = module.q_values(obs, actions)
        if critic_includes_reference:
            fitted = fitted + w * ACAUpdate(config)._reference_term(obs, actions, module.ref_actor(obs))
        next_q = module.q_values(obs, next_actions).min(0).values
        next_q = next_q + w * ACAUpdate(config)._reference_term(obs, next_actions, module.ref_actor(obs))
        y = maths.soft_q_target(reward(actions), torch.zeros(SAMPLES), GAMMA, next_q, next_log_pi, alpha)
        entropy = -float(next_log_pi.mean())
    return float(y.mean() - fitted.min(0).values.mean()), GAMMA * entropy


@pytest.mark.parametrize("critic_includes_reference", [True, False])
def test_expected_td_target_equals_aligned_critic_with_the_online_temperature_in_y_z(critic_includes_reference):
    gap, _ = td_gap(z_target_alpha=1.0, critic_includes_reference=critic_includes_reference)
    assert abs(gap) < TOLERANCE


def test_offline_temperature_in_y_z_leaves_a_gap_of_gamma_times_the_entropy():
    """The reference code's y_Z (alpha_off = 0 here): the target exceeds the critic by gamma H(pi0)."""
    gap, gamma_entropy = td_gap(z_target_alpha=0.0, critic_includes_reference=True)
    assert abs(gamma_entropy) > 10 * TOLERANCE  # precondition: pi0's entropy makes the gap measurable
    assert gap == pytest.approx(gamma_entropy, abs=TOLERANCE)
    assert math.copysign(1, gap) == math.copysign(1, gamma_entropy)


# The same MDP with data from a behaviour policy beta != pi0. A state baseline fitted by TD on the
# data's actions is beta's value, Z = E_beta[r] / (1 - gamma), so at t = 0 the online target (pi0
# acting) misses it by E_pi0[r] - E_beta[r]. Distilled from a critic that is pi0's Q, Z is pi0's value
# and the gap closes.
BETA_MEAN, BETA_LOG_STD = [-0.5, 0.5], [-1.0, -1.0]


def behaviour_dataset(num: int = 4096):
    torch.manual_seed(4)
    mean, log_std = torch.tensor(BETA_MEAN).expand(num, 2), torch.tensor(BETA_LOG_STD).expand(num, 2)
    return dataset_of(maths.tanh_gaussian_rsample(mean, log_std)[0])


def mean_reward(mean, log_std, seed: int) -> float:
    torch.manual_seed(seed)
    actions, _ = maths.tanh_gaussian_rsample(torch.tensor(mean).expand(SAMPLES, 2),
                                             torch.tensor(log_std).expand(SAMPLES, 2))
    return float(reward(actions).mean())


def pi0_q_critic(value_pi0: float) -> dict:
    """A twin critic fitted to Q(s, a) = r(a) + gamma value_pi0 on actions uniform in [-1, 1]^2: pi0's
    true Q for its value V^pi0, a SAC critic's soft Q for its soft value plus alpha_off H(pi0)."""
    torch.manual_seed(5)
    critic = EnsembleMLP(2, 4, 1, HIDDEN)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(3000):
        actions = torch.rand(256, 2) * 2 - 1
        target = reward(actions) + GAMMA * value_pi0
        loss = maths.critic_loss(critic(torch.cat([OBS.expand(256, 2), actions], -1)).squeeze(-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().numpy() for k, v in critic.state_dict().items()}


def td_gap_from_behaviour_data(offline_critic: dict | None, entropy_bonus: float = 0.0) -> float:
    """E_{a ~ pi0}[y(s, a)] - Z(s) at t = 0 for the project's aca (the critic fits R alone); `entropy_bonus`:
    beta_0 of the target's state bonus (w = w_0 here, so beta_t = beta_0)."""
    pi0 = state_independent_pi0()
    actor_state = {k: v.numpy() for k, v in pi0.state_dict().items()}
    settings = AlignSettings(z_steps=3000, batch_size=256, lr=3e-3, gamma=GAMMA, alpha_off=1.0, curve_every=500,
                             seed=0, z_includes_log_pi0=False)
    report = align(actor_state, behaviour_dataset(), HIDDEN, settings, offline_critic=offline_critic)
    assert report["z_source"] == ("offline critic" if offline_critic else "td")
    critic = EnsembleMLP(2, 4, 1, HIDDEN)
    critic.load_state_dict({k[len("critic."):]: torch.tensor(v) for k, v in report["weights"].items()
                            if k.startswith("critic.")})
    module = SimpleNamespace(ref_actor=pi0, q_values=lambda o, a: critic(torch.cat([o, a], -1)).squeeze(-1))
    config = SimpleNamespace(clip_beta=7.0, use_log_prob_clip=True)
    obs = OBS.expand(SAMPLES, 2)
    with torch.no_grad():
        actions, _ = pi0_samples(SAMPLES, seed=2)
        next_actions, next_log_pi = pi0_samples(SAMPLES, seed=3)
        next_q = module.q_values(obs, next_actions).min(0).values
        next_q = next_q + ACAUpdate(config)._reference_term(obs, next_actions, module.ref_actor(obs))
        next_q = next_q + maths.offline_entropy_bonus(entropy_bonus, pi0_samples(SAMPLES, seed=9)[1])
        y = maths.soft_q_target(reward(actions), torch.zeros(SAMPLES), GAMMA, next_q, next_log_pi, 1.0)
        z = module.q_values(obs, actions).min(0).values
    return float(y.mean() - z.mean())


def test_td_fitted_baseline_is_the_behaviours_value_and_misses_the_target_by_the_reward_gap():
    reward_gap = mean_reward(PI0_MEAN, PI0_LOG_STD, 6) - mean_reward(BETA_MEAN, BETA_LOG_STD, 7)
    assert abs(reward_gap) > 10 * TOLERANCE  # precondition: beta and pi0 earn measurably different rewards
    assert td_gap_from_behaviour_data(None) == pytest.approx(reward_gap, abs=2 * TOLERANCE)


def test_baseline_distilled_from_pi0s_critic_meets_the_expected_td_target():
    value_pi0 = mean_reward(PI0_MEAN, PI0_LOG_STD, 6) / (1 - GAMMA)
    assert abs(td_gap_from_behaviour_data(pi0_q_critic(value_pi0))) < TOLERANCE


def test_baseline_distilled_from_a_soft_critic_meets_the_target_that_keeps_its_entropy_bonus():
    """A SAC critic at temperature alpha_off values pi0 with alpha_off H(pi0) per future step; online at
    pi = pi0 and w = alpha that bonus cancels, so its distilled Z misses the target by -gamma alpha_off H,
    unless the target keeps the bonus (`offline_entropy_bonus` = alpha_off)."""
    alpha_off = 2.0
    entropy = -float(pi0_samples(SAMPLES, seed=8)[1].mean())
    soft_value = (mean_reward(PI0_MEAN, PI0_LOG_STD, 6) + GAMMA * alpha_off * entropy) / (1 - GAMMA)
    soft_critic = pi0_q_critic(soft_value + alpha_off * entropy)
    assert abs(GAMMA * alpha_off * entropy) > 10 * TOLERANCE  # precondition: the bonus is measurable
    assert td_gap_from_behaviour_data(soft_critic) == pytest.approx(-GAMMA * alpha_off * entropy, abs=2 * TOLERANCE)
    assert abs(td_gap_from_behaviour_data(soft_critic, entropy_bonus=alpha_off)) < TOLERANCE


def test_distillation_refuses_the_log_pi0_parameterisation():
    pi0 = state_independent_pi0()
    settings = AlignSettings(z_steps=10, batch_size=16, z_includes_log_pi0=True)
    with pytest.raises(ValueError, match="z_includes_log_pi0=False"):
        align({k: v.numpy() for k, v in pi0.state_dict().items()}, behaviour_dataset(64), HIDDEN, settings,
              offline_critic=pi0_q_critic(0.0))


class CountingTargets:
    """A stand-in for the distillation targets: target(s) = sum(s); counts the states evaluated."""

    def __init__(self):
        self.evaluated = 0

    def of(self, obs: torch.Tensor) -> torch.Tensor:
        self.evaluated += len(obs)
        return obs.sum(-1)


@pytest.mark.parametrize("rows_sampled, evaluated_up_front", [(100, 50), (10, 0)])
def test_distillation_targets_are_computed_once_per_state_and_only_where_the_fit_samples(
        rows_sampled, evaluated_up_front):
    """A dataset no bigger than the fit's samples gets every target up front; a bigger one only the
    sampled states', each once: the set-up cost follows the fit's length, not the dataset's."""
    from rllib_o2o.algorithms.alignment.z_fit import _TargetCache

    obs = torch.arange(100.0).reshape(50, 2)
    targets = CountingTargets()
    cache = _TargetCache(targets, lambda index: obs[index], len(obs), rows_sampled, device="cpu")
    assert targets.evaluated == evaluated_up_front
    first = torch.tensor([[3, 7, 3], [7, 9, 1]])
    torch.testing.assert_close(cache.at(first), obs[first].sum(-1))
    after_first = targets.evaluated
    assert after_first == (50 if evaluated_up_front else 4)  # states 1, 3, 7, 9
    torch.testing.assert_close(cache.at(torch.tensor([9, 1, 2])), obs[[9, 1, 2]].sum(-1))
    assert targets.evaluated == (50 if evaluated_up_front else 5)  # only state 2 is new
