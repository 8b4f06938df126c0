"""The ACA equations of rllib_o2o.maths against hand-computed values.

Hand values: log N(u; m, s) = -((u-m)/s)^2/2 - log s - log(2 pi)/2 with
log(2 pi)/2 = 0.9189385332; tanh Jacobian term log(1 - tanh(u)^2) = -2 log cosh(u).
"""

import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from rllib_o2o import maths as M

F64 = torch.float64


def t(*values):
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------- tanh-Gaussian


def test_log_prob_1d_by_hand():
    # mean 0, std 1, u = 0.5: log N(0.5; 0, 1) = -0.125 - 0.9189385332 = -1.0439385332,
    # log(1 - tanh(0.5)^2) = log(1 - 0.4621171573^2) = -0.2402290139  ->  -0.8037095193.
    lp = M.tanh_gaussian_log_prob(t(0.0), t(0.0), torch.tanh(t(0.5)))
    assert lp.shape == ()
    assert lp.item() == pytest.approx(-0.8037095193, abs=1e-9)


def test_log_prob_2d_by_hand():
    # dim 1: mean 0.2, std 0.5, u = 0.7: -0.5 + 0.6931471806 - 0.9189385332 - log(1 - tanh(0.7)^2)
    #        = -0.7257913526 + 0.4545404587 = -0.2712508939
    # dim 2: mean -0.3, std 1, u = -1.0: -0.245 - 0.9189385332 - log(1 - tanh(1)^2)
    #        = -1.1639385332 + 0.8675616610 = -0.2963768722;   sum = -0.5676277662
    mean, log_std = t(0.2, -0.3), t(math.log(0.5), 0.0)
    lp = M.tanh_gaussian_log_prob(mean, log_std, torch.tanh(t(0.7, -1.0)))
    assert lp.item() == pytest.approx(-0.5676277662, abs=1e-9)


def test_rsample_log_prob_agrees_with_log_prob_and_torch_distributions():
    torch.manual_seed(0)
    mean = torch.randn(512, 3, dtype=F64) * 0.5
    log_std = torch.rand(512, 3, dtype=F64) * 1.5 - 1.5  # std in [0.22, 1]: moderate u
    action, lp = M.tanh_gaussian_rsample(mean, log_std)
    assert action.shape == (512, 3) and lp.shape == (512,)
    assert action.abs().max() < 1
    torch.testing.assert_close(M.tanh_gaussian_log_prob(mean, log_std, action), lp, rtol=0, atol=1e-8)
    ref = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(action).sum(-1)
    torch.testing.assert_close(lp, ref, rtol=0, atol=1e-8)


def test_rsample_is_reparameterised_and_finite_when_saturated():
    mean = torch.full((4, 2), 30.0, requires_grad=True)  # tanh(u) == 1 in float32
    action, lp = M.tanh_gaussian_rsample(mean, torch.full((4, 2), -3.0))
    assert torch.isfinite(lp).all()
    # Exact for |u| >> 1: log(1 - tanh(u)^2) = 2 log 2 - 2|u|, so d lp / d mean = +2 per dimension.
    (grad,) = torch.autograd.grad(lp.sum(), mean)
    torch.testing.assert_close(grad, torch.full((4, 2), 2.0), rtol=0, atol=1e-4)


def test_path_only_rsample_by_hand():
    """Same sample and value as tanh_gaussian_rsample; d log pi / d mean = -eps/std + 2 tanh(u) (the path
    through u) where the full reparameterised form gives 2 tanh(u): its Gaussian part is -eps^2/2 - log std."""
    mean = torch.tensor([0.3], dtype=F64, requires_grad=True)
    log_std = torch.tensor([math.log(2.0)], dtype=F64, requires_grad=True)
    torch.manual_seed(7)
    action, lp = M.tanh_gaussian_rsample_path_only(mean, log_std)
    torch.manual_seed(7)
    action_full, lp_full = M.tanh_gaussian_rsample(mean, log_std)
    torch.manual_seed(7)
    eps = float(torch.randn(1, dtype=F64))
    u = 0.3 + 2.0 * eps
    assert action.item() == pytest.approx(math.tanh(u), abs=1e-12) and action_full.item() == action.item()
    hand = -0.5 * eps * eps - math.log(2.0) - 0.9189385332 + 2.0 * math.log(math.cosh(u))
    assert lp.item() == pytest.approx(hand, abs=1e-9) and lp_full.item() == pytest.approx(hand, abs=1e-9)
    (g_mean, g_log_std) = torch.autograd.grad(lp, (mean, log_std))
    (f_mean, f_log_std) = torch.autograd.grad(lp_full, (mean, log_std))
    assert float(g_mean) == pytest.approx(-eps / 2.0 + 2.0 * math.tanh(u), abs=1e-9)
    assert float(f_mean) == pytest.approx(2.0 * math.tanh(u), abs=1e-9)
    # d/d log_std: path through u = mean + e^{log_std} eps is (-eps/std + 2 tanh u) * std * eps;
    # the full form adds the score's -1 + eps^2.
    assert float(g_log_std) == pytest.approx((-eps / 2.0 + 2.0 * math.tanh(u)) * 2.0 * eps, abs=1e-9)
    assert float(f_log_std) == pytest.approx(2.0 * math.tanh(u) * 2.0 * eps - 1.0, abs=1e-9)


def test_path_only_kl_gradient_is_zero_per_sample_at_the_reference():
    """log pi(a) - log pi0(a) at pi = pi0: with the score dropped every sample's gradient is 0
    (the full form's is the score, zero only on average)."""
    torch.manual_seed(0)
    mean = torch.randn(64, 3, dtype=F64, requires_grad=True)
    log_std = (torch.rand(64, 3, dtype=F64) - 1.0).requires_grad_(True)
    for sample, expect_zero in ((M.tanh_gaussian_rsample_path_only, True), (M.tanh_gaussian_rsample, False)):
        action, lp = sample(mean, log_std)
        kl_sample = lp - M.tanh_gaussian_log_prob(mean.detach(), log_std.detach(), action)
        grads = torch.autograd.grad(kl_sample.sum(), (mean, log_std))
        largest = max(float(g.abs().max()) for g in grads)
        assert (largest < 1e-8) if expect_zero else (largest > 0.1)


def test_log_prob_of_boundary_action_is_finite():
    # a = +-1 (common in D4RL) is clamped to 1 - eps: u = atanh(1 - 1e-6) = 7.254329
    lp = M.tanh_gaussian_log_prob(t(0.0), t(0.0), t(1.0))
    u = math.atanh(1 - 1e-6)
    assert lp.item() == pytest.approx(-0.5 * u * u - 0.9189385332 - math.log(1 - (1 - 1e-6) ** 2), abs=1e-6)


# ---------------------------------------------------------------- the clip


def test_clip_threshold_1d_min_picks_lower_squashed_density():
    # mean 0.5, std 0.2, beta 3: u- = -0.1, u+ = 1.1. The Gaussian part is the same at both:
    # -4.5 + 1.6094379124 - 0.9189385332 = -3.8095006208. log pi = that + 2 log cosh(u):
    # u-: -3.8095006208 + 0.0099833776 = -3.7995172431;  u+: + 1.0238722784 = -2.7856283424.
    c = M.log_prob_clip_threshold(t(0.5), t(math.log(0.2)), 3.0)
    assert c.item() == pytest.approx(-3.7995172431, abs=1e-9)
    assert M.log_prob_clip_threshold(t(0.5), t(math.log(0.2)), 3.0, squashed=False).item() == pytest.approx(
        -3.8095006208, abs=1e-9
    )


def test_clip_threshold_2d_is_min_over_the_two_joint_points():
    # mean (0.5, -1.0), std (0.2, 0.3), beta 3: u- = (-0.1, -1.9), u+ = (1.1, -0.1).
    # Gaussian part (both points) = -3.8095006208 + (-4.5 + 1.2039728043 - 0.9189385332) = -8.0244663496
    # u-: + 2 log cosh 0.1 + 2 log cosh 1.9 = -5.5565289002
    # u+: + 2 log cosh 1.1 + 2 log cosh 0.1 = -6.9906106936  <- the min
    # (a per-dimension min would give -8.0244663496 + 4 log cosh 0.1 = -8.0045: not the spec.)
    mean, log_std = t(0.5, -1.0), t(math.log(0.2), math.log(0.3))
    assert M.log_prob_clip_threshold(mean, log_std, 3.0).item() == pytest.approx(-6.9906106936, abs=1e-9)
    # Unsquashed (AntMaze): both points have the Gaussian density.
    assert M.log_prob_clip_threshold(mean, log_std, 3.0, squashed=False).item() == pytest.approx(
        -8.0244663496, abs=1e-9
    )


def test_clip_threshold_is_the_log_prob_of_the_squashed_points():
    torch.manual_seed(1)
    mean, log_std = torch.randn(64, 3, dtype=F64), torch.randn(64, 3, dtype=F64) * 0.3 - 1.0
    beta = 2.0
    at = lambda u: M.tanh_gaussian_log_prob(mean, log_std, torch.tanh(u))  # noqa: E731
    std = log_std.exp()
    expected = torch.minimum(at(mean - beta * std), at(mean + beta * std))
    torch.testing.assert_close(M.log_prob_clip_threshold(mean, log_std, beta), expected, rtol=0, atol=1e-7)


def test_clipped_log_prob_limits_bound_and_smoothness():
    c = torch.tensor([-5.0, 0.0, 3.0])
    far_above = c + 8.0
    torch.testing.assert_close(M.clipped_log_prob(far_above, c), far_above, rtol=0, atol=1e-3)
    torch.testing.assert_close(M.clipped_log_prob(c - 1e4, c), c, rtol=0, atol=1e-6)
    # at log pi0 == c: l = c + log 2
    torch.testing.assert_close(M.clipped_log_prob(c, c), c + math.log(2.0))

    lp = torch.linspace(-1e3, 50.0, 2001, requires_grad=True)
    l = M.clipped_log_prob(lp, torch.tensor(-3.0))
    assert (l >= -3.0).all() and (l >= lp - 1e-6).all()
    (grad,) = torch.autograd.grad(l.sum(), lp)
    assert torch.isfinite(grad).all() and (grad >= 0).all() and (grad <= 1).all()
    assert grad[0] < 1e-6 and grad[-1] > 1 - 1e-6  # sigmoid: 0 far below c, 1 far above


# ---------------------------------------------------------------- weight schedule


@pytest.mark.parametrize(
    "updates, schedule, expected",
    [
        (0, (1, 40, 0.5), 1.0),
        (10_000, (1, 40, 0.5), 0.75),
        (20_000, (1, 40, 0.5), 0.5),
        (35_000, (1, 40, 0.5), 0.5),
        (5_000, (1, 10, 0), 0.5),
        (10_000, (1, 10, 0), 0.0),
        (1_000_000, (1, 10, 0), 0.0),
        (70_000, (1, 100, 1), 1.0),
        (2_500, (2, 10, 0.1), 1.5),
    ],
)
def test_reference_weight(updates, schedule, expected):
    w = M.reference_weight(updates, *schedule)
    assert isinstance(w, float)
    assert w == pytest.approx(expected, abs=1e-12)


def test_reference_weight_rejects_nonpositive_T():
    with pytest.raises(ValueError):
        M.reference_weight(0, 1.0, 0, 0.5)


# ---------------------------------------------------------------- targets and losses (batch of 3, one terminal)

REWARDS = t(1.0, -0.5, 2.0)
TERMINATEDS = torch.tensor([False, True, False])


def test_soft_q_target_by_hand():
    # inner = q - 0.2 lp = (10.2, 2.9, -4.4); y = r + 0.9 (1 - d) inner = (10.18, -0.5, -1.96)
    next_q = t(10.0, 3.0, -4.0).requires_grad_()
    alpha = torch.tensor(0.2, dtype=F64, requires_grad=True)
    y = M.soft_q_target(REWARDS, TERMINATEDS, 0.9, next_q, t(-1.0, 0.5, 2.0), alpha)
    torch.testing.assert_close(y, t(10.18, -0.5, -1.96))
    assert not y.requires_grad
    # float terminateds and float alpha give the same
    y2 = M.soft_q_target(REWARDS, TERMINATEDS.to(F64), 0.9, next_q, t(-1.0, 0.5, 2.0), 0.2)
    torch.testing.assert_close(y2, y)


def test_z_target_by_hand():
    # log pi0 + z - 0.2 log pi0 = (-0.8 + 10, 0.4 + 3, 1.6 - 4) = (9.2, 3.4, -2.4)
    # y_Z = (1 + 0.9 * 9.2, -0.5, 2 - 0.9 * 2.4) = (9.28, -0.5, -0.16)
    next_z = t(10.0, 3.0, -4.0).requires_grad_()
    y = M.z_target(REWARDS, TERMINATEDS, 0.9, t(-1.0, 0.5, 2.0), next_z, 0.2)
    torch.testing.assert_close(y, t(9.28, -0.5, -0.16))
    assert not y.requires_grad


def test_z_loss_by_hand_and_trains_only_z():
    # member 0: log pi0 + Z - y = (0, 0, 0.5) -> mean sq 0.25/3; member 1: (-1, -2, -2.5) -> 11.25/3
    log_pi0 = t(-1.0, 0.0, 0.5).requires_grad_()
    z = t(1.0, 2.0, 3.0, 0.0, 0.0, 0.0).view(2, 3).requires_grad_()
    loss = M.z_loss(log_pi0, z, t(0.0, 2.0, 3.0))
    assert loss.item() == pytest.approx(0.25 / 3 + 11.25 / 3, abs=1e-12)
    loss.backward()
    assert log_pi0.grad is None
    # d/dZ_i = 2 err / B
    torch.testing.assert_close(z.grad, t(0.0, 0.0, 1.0, -2.0, -4.0, -5.0).view(2, 3) / 3)


def test_critic_value_of_policy_is_the_mean_over_samples_of_the_min_over_critics():
    # E = 2 critics, K = 2 sampled actions, B = 2 states
    # state 0: min over critics (1, 4) -> 1 and (3, 2) -> 2: mean 1.5
    # state 1: (-1, 0) -> -1 and (5, 7) -> 5: mean 2.0
    q = t(1.0, -1.0, 3.0, 5.0,   # critic 0: [K, B]
          4.0, 0.0, 2.0, 7.0).view(2, 2, 2).requires_grad_()
    value = M.critic_value_of_policy(q)
    torch.testing.assert_close(value, t(1.5, 2.0))
    assert not value.requires_grad


def test_average_value_estimate_is_the_mean_over_states_of_the_min_over_critics():
    # E = 2 critics, N = 3 states: mins (1, -1, 2), mean 2/3
    q = t(1.0, 0.0, 2.0,
          4.0, -1.0, 3.0).view(2, 3)
    torch.testing.assert_close(M.average_value_estimate(q), t(2.0 / 3.0).squeeze())


def test_offline_entropy_bonus_is_minus_beta_log_pi0():
    # beta 0.5, log pi0(a0|s') (-3, 1): bonuses 1.5 and -0.5, without gradient
    log_prob = t(-3.0, 1.0).requires_grad_()
    bonus = M.offline_entropy_bonus(0.5, log_prob)
    torch.testing.assert_close(bonus, t(1.5, -0.5))
    assert not bonus.requires_grad


def test_min_over_members_is_the_per_row_min():
    # 3 members, B = 2: columns (1, 3, 0) and (5, 2, 4)
    q = t(1.0, 5.0, 3.0, 2.0, 0.0, 4.0).view(3, 2)
    torch.testing.assert_close(M.min_over_members(q), t(0.0, 2.0))
    torch.testing.assert_close(M.min_over_members(q[:2]), t(1.0, 2.0))  # the subset {0, 1}


def test_critic_loss_is_sum_of_member_mse():
    # member 0: errors (0, 1, 2) -> 5/3; member 1: (1, 1, 1) -> 1
    q = t(1.0, 2.0, 3.0, 2.0, 2.0, 2.0).view(2, 3)
    assert M.critic_loss(q, t(1.0, 1.0, 1.0)).item() == pytest.approx(8.0 / 3.0, abs=1e-12)


def test_cql_penalty_by_hand():
    # member 0, one state: logsumexp(0, ln 3) = ln 4, data value 1 -> ln 4 - 1
    # member 1, one state: logsumexp(ln 2, ln 2) = ln 4, data value 0 -> ln 4; summed over members
    q_sampled = torch.tensor([[[0.0, math.log(3.0)]], [[math.log(2.0), math.log(2.0)]]])
    q_data = t(1.0, 0.0).view(2, 1)
    assert M.cql_penalty(q_sampled, q_data).item() == pytest.approx(2 * math.log(4.0) - 1.0, abs=1e-6)
    # temperature T: T * logsumexp(q / T); with T = 2 member 1 gives 2 ln(2 * 2^(1/2))
    got = M.cql_penalty(q_sampled[1:], q_data[1:], temperature=2.0).item()
    assert got == pytest.approx(2.0 * math.log(2.0 * math.sqrt(2.0)), abs=1e-6)


def test_density_ratio_loss_by_hand():
    # offline w = (1, 3): mean(log(2/2), log(4/2)) = ln2 / 2
    # online  w = (1, 1/3): mean(log(2/2), log((2/3)/(4/3))) = -ln2 / 2  -> loss = ln 2
    loss = M.density_ratio_loss(t(1.0, 3.0), t(1.0, 1.0 / 3.0))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-9)


def test_density_ratio_loss_is_minimised_at_the_true_ratio():
    # Discrete (s, a) with 3 cells: the loss's pointwise minimiser must be d_online / d_offline.
    d_off, d_on = t(0.5, 0.3, 0.2), t(0.1, 0.3, 0.6)
    log_w = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([log_w], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)

    def expected_loss():
        opt.zero_grad()
        w = log_w.exp()
        # expectations as probability-weighted sums (the mean over an exact sample of each distribution)
        loss = (d_off * torch.log((w + 1) / 2)).sum() - (d_on * torch.log(2 * w / (w + 1))).sum()
        loss.backward()
        return loss

    opt.step(expected_loss)
    torch.testing.assert_close(log_w.exp().detach(), d_on / d_off, atol=1e-6, rtol=1e-6)
    # and the library's loss on "samples" drawn exactly in those proportions agrees with the sum
    w = (d_on / d_off)
    off = torch.repeat_interleave(w, torch.tensor([5, 3, 2]))
    on = torch.repeat_interleave(w, torch.tensor([1, 3, 6]))
    assert M.density_ratio_loss(off, on).item() == pytest.approx(expected_loss().item(), abs=1e-9)


def test_balanced_replay_priority_by_hand():
    # T = 2: sqrt(w); offline normaliser mean(sqrt(1), sqrt(9)) = 2
    w = t(4.0, 16.0, 0.0, 1e12)
    p = M.balanced_replay_priority(w, t(1.0, 9.0), temperature=2.0)
    torch.testing.assert_close(p, t(1.0, 2.0, 1e-3, 1e3))  # 2/2, 4/2, clipped below, clipped above
    assert not p.requires_grad


def test_sac_actor_loss_does_not_train_alpha():
    alpha = torch.tensor(0.5, requires_grad=True)
    lp, q = torch.tensor([1.0, -1.0], requires_grad=True), torch.tensor([2.0, -6.0])
    loss = M.sac_actor_loss(alpha, lp, q)
    assert loss.item() == pytest.approx(2.0)  # mean(0.5 - 2, -0.5 + 6)
    loss.backward()
    assert alpha.grad is None
    torch.testing.assert_close(lp.grad, torch.tensor([0.25, 0.25]))


def test_ml_actor_loss_lambda_by_hand():
    # lambda = 2.5 / mean(|2|, |-6|) = 0.625; SAC part mean(0.5*1 - 2, 0.5*(-1) + 6) = 2.0
    # loss = 0.625 * 2.0 - mean(-3, -1) = 1.25 + 2 = 3.25
    q = torch.tensor([2.0, -6.0], requires_grad=True)
    loss, lam = M.ml_actor_loss(0.5, torch.tensor([1.0, -1.0]), q, torch.tensor([-3.0, -1.0]), alpha_bc=2.5)
    assert lam.item() == pytest.approx(0.625) and not lam.requires_grad
    assert loss.item() == pytest.approx(3.25)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([-0.3125, -0.3125]))  # -lambda / B: no grad via lambda


def test_aca_actor_loss_by_hand_gradient_flows_through_l():
    # mean(2*1 - 0.5 - 0.5*(-2), 2*3 - 1.5 - 0.5*4) = mean(2.5, 2.5)
    l = torch.tensor([-2.0, 4.0], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    loss = M.aca_actor_loss(alpha, torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]), 0.5, l)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    torch.testing.assert_close(l.grad, torch.tensor([-0.25, -0.25]))
    assert alpha.grad is None


def test_tanh_gaussian_kl_by_hand():
    # 1-D: mu 0.5, sigma 2 against mu0 0, sigma0 1:
    # log(1/2) + (4 + 0.25) / 2 - 1/2 = -0.693147 + 2.125 - 0.5 = 0.931853
    kl = M.tanh_gaussian_kl(torch.tensor([[0.5]]), torch.tensor([[math.log(2.0)]]),
                            torch.tensor([[0.0]]), torch.tensor([[0.0]]))
    assert float(kl[0]) == pytest.approx(0.931853, abs=1e-5)
    # two dims add; identical policies have KL 0
    mean, log_std = torch.tensor([[0.3, -1.0]]), torch.tensor([[-0.5, 0.2]])
    assert float(M.tanh_gaussian_kl(mean, log_std, mean, log_std)[0]) == pytest.approx(0.0, abs=1e-7)


def test_tanh_gaussian_kl_equals_monte_carlo_of_the_squashed_densities():
    torch.manual_seed(0)
    mean, log_std = torch.tensor([[0.8, -0.3]]), torch.tensor([[-1.0, -0.4]])
    ref_mean, ref_log_std = torch.tensor([[0.5, 0.1]]), torch.tensor([[-0.7, -0.6]])
    pi = TransformedDistribution(Normal(mean.expand(200_000, 2), log_std.exp().expand(200_000, 2)),
                                 [TanhTransform()])
    pi0 = TransformedDistribution(Normal(ref_mean, ref_log_std.exp()), [TanhTransform()])
    a = pi.sample().clamp(-1 + 1e-7, 1 - 1e-7)
    mc = (pi.log_prob(a) - pi0.log_prob(a)).sum(-1).mean()
    assert float(M.tanh_gaussian_kl(mean, log_std, ref_mean, ref_log_std)[0]) == pytest.approx(float(mc), abs=0.02)


def test_temperature_loss_gradient():
    # d/d log_alpha = -mean(log pi + H) = -mean(-1 + (-2), 0.5 + (-2)) = 2.25: entropy above target lowers alpha
    log_alpha = torch.tensor(0.3, requires_grad=True)
    lp = torch.tensor([-1.0, 0.5], requires_grad=True)
    loss = M.temperature_loss(log_alpha, lp, target_entropy=-2.0)
    assert loss.item() == pytest.approx(0.3 * 2.25)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(2.25)
    assert lp.grad is None


def test_temperature_loss_with_a_per_state_target():
    # target -log pi0(a0|s) per state: d/d log_alpha = -mean(-1 + 1.5, -2 + 1.0) = 0.25
    log_alpha = torch.tensor(0.0, requires_grad=True)
    M.temperature_loss(log_alpha, torch.tensor([-1.0, -2.0]), torch.tensor([1.5, 1.0])).backward()
    assert log_alpha.grad.item() == pytest.approx(0.25)


def test_temperature_floor_clamps_log_alpha_in_place():
    log_alpha = torch.tensor(math.log(0.01))
    M.temperature_floor_(log_alpha, 0.1)  # alpha 0.01 < 0.1: raised to the floor
    assert log_alpha.item() == pytest.approx(math.log(0.1))
    M.temperature_floor_(log_alpha, 0.05)  # alpha 0.1 >= 0.05: unchanged
    assert log_alpha.item() == pytest.approx(math.log(0.1))
    tiny = torch.tensor(-20.0)
    M.temperature_floor_(tiny, 0.0)  # no floor
    assert tiny.item() == -20.0


def test_polyak_update_in_place():
    target = [torch.zeros(3), torch.full((2, 2), 4.0)]
    source = [torch.ones(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)]
    ids = [p.data_ptr() for p in target]
    M.polyak_update_(target, source, 0.005)
    M.polyak_update_(target, source, 0.005)
    torch.testing.assert_close(target[0], torch.full((3,), 0.005 + 0.995 * 0.005))
    torch.testing.assert_close(target[1], torch.full((2, 2), 4.0 * 0.995**2))
    assert [p.data_ptr() for p in target] == ids
    with pytest.raises(ValueError):
        M.polyak_update_(target, source[:1], 0.005)


def test_zero_action_columns():
    w = torch.randn(2, 3, 5)
    padded = M.zero_action_columns(w, obs_dim=3, action_dim=2)
    assert padded.shape == (2, 5, 5)
    assert torch.equal(padded[:, :3], w) and torch.equal(padded[:, 3:], torch.zeros(2, 2, 5))
    with pytest.raises(ValueError):
        M.zero_action_columns(w, obs_dim=4, action_dim=2)


# ---------------------------------------------------------------- RLPD and WSRL


def test_ensemble_layer_norm_by_hand():
    # member 0, row (1, 2, 3): mean 2, biased var 2/3 -> (-1, 0, 1) / sqrt(2/3 + eps), then g (1, 2, 1), b (0, 0, 1)
    # member 1, row (2, 2, 5): mean 3, var ((1 + 1 + 4) / 3) = 2 -> (-1, -1, 2) / sqrt(2 + eps), g 1, b 0
    x = t(1.0, 2.0, 3.0, 2.0, 2.0, 5.0).view(2, 1, 3)
    gain = t(1.0, 2.0, 1.0, 1.0, 1.0, 1.0).view(2, 1, 3)
    bias = t(0.0, 0.0, 1.0, 0.0, 0.0, 0.0).view(2, 1, 3)
    s0, s1 = math.sqrt(2.0 / 3.0 + 1e-5), math.sqrt(2.0 + 1e-5)
    expected = t(-1.0 / s0, 0.0, 1.0 / s0 + 1.0, -1.0 / s1, -1.0 / s1, 2.0 / s1).view(2, 1, 3)
    torch.testing.assert_close(M.ensemble_layer_norm(x, gain, bias), expected)


@pytest.mark.parametrize("interval, due", [(1, [True] * 6), (4, [False, False, False, True, False, False]),
                                           (3, [False, False, True, False, False, True])])
def test_is_policy_update_after_every_interval_critic_updates(interval, due):
    assert [M.is_policy_update(n, interval) for n in range(6)] == due
    with pytest.raises(ValueError):
        M.is_policy_update(0, 0)


def test_offline_rows_per_batch_by_hand():
    assert M.offline_rows_per_batch(256, 0.5) == 128
    assert M.offline_rows_per_batch(255, 0.5) == 127  # floor: the online half gets the odd row
    assert M.offline_rows_per_batch(10, 0.25) == 2
    assert M.offline_rows_per_batch(64, 0.0) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            M.offline_rows_per_batch(64, bad)


# ---------------------------------------------------------------- IQL and the offline stage's settling


def test_expectile_loss_by_hand():
    # u = (2, -1, 0.5), tau 0.7: weights 0.7, 0.3, 0.7 -> (0.7*4 + 0.3*1 + 0.7*0.25) / 3 = 3.275 / 3.
    assert M.expectile_loss(t(2.0, -1.0, 0.5), 0.7).item() == pytest.approx(3.275 / 3, abs=1e-12)
    # tau 0.5 is half the mean squared error.
    assert M.expectile_loss(t(2.0, -1.0), 0.5).item() == pytest.approx(0.5 * 2.5, abs=1e-12)


def test_expectile_loss_minimiser_is_the_expectile():
    # Values 0 and 1 with tau 0.7: d/dv [0.7 (1 - v)^2 + 0.3 v^2] = 0 -> v = 0.7.
    v = torch.zeros((), dtype=F64, requires_grad=True)
    optimiser = torch.optim.SGD([v], lr=0.5)
    for _ in range(200):
        optimiser.zero_grad()
        M.expectile_loss(t(0.0, 1.0) - v, 0.7).backward()
        optimiser.step()
    assert v.item() == pytest.approx(0.7, abs=1e-9)


def test_advantage_weights_by_hand_clipped_and_detached():
    # beta 3: exp(3 * 0.5) = 4.4816890703, exp(3 * -1) = 0.0497870684, exp(3 * 2) = 403.43 -> clipped at 100.
    a = t(0.5, -1.0, 2.0).requires_grad_()
    w = M.advantage_weights(a, 3.0, 100.0)
    assert w.tolist() == pytest.approx([4.4816890703, 0.0497870684, 100.0], abs=1e-9)
    assert not w.requires_grad


def test_awr_actor_loss_by_hand():
    # -(2 * -1 + 0.5 * -4) / 2 = 2; the weights get no gradient, log pi gets -w / B.
    logp = t(-1.0, -4.0).requires_grad_()
    weights = t(2.0, 0.5).requires_grad_()
    loss = M.awr_actor_loss(weights, logp)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-1.0, -0.25])
    assert weights.grad is None


def test_state_value_target_by_hand():
    # r + 0.99 (1 - d) V(s'): 1 + 0.99 * 10 = 10.9; terminal: 2.
    y = M.state_value_target(t(1.0, 2.0), t(0.0, 1.0), 0.99, t(10.0, 10.0))
    assert y.tolist() == pytest.approx([10.9, 2.0])


def test_return_range_scale_by_hand():
    assert M.return_range_scale([100.0, 500.0, 300.0]) == pytest.approx(1000.0 / 400.0)
    with pytest.raises(ValueError, match="different returns"):
        M.return_range_scale([5.0, 5.0])


def test_cosine_decay_by_hand():
    # base 3e-4 over T = 100: t = 0 -> 3e-4, t = 25 -> 3e-4 (1 + cos(pi/4)) / 2 = 2.5606601718e-4,
    # t = 50 -> 1.5e-4, t >= 100 -> 0.
    assert M.cosine_decay(3e-4, 0, 100) == pytest.approx(3e-4)
    assert M.cosine_decay(3e-4, 25, 100) == pytest.approx(2.5606601718e-4, rel=1e-9)
    assert M.cosine_decay(3e-4, 50, 100) == pytest.approx(1.5e-4)
    assert M.cosine_decay(3e-4, 150, 100) == 0.0
    with pytest.raises(ValueError):
        M.cosine_decay(3e-4, 0, 0)


def test_moving_average_rate_by_hand():
    # tau 0.01: steps 0, 1, 9 are the running mean's 1, 1/2, 1/10; from step 99 on (1/100 = tau) it is tau.
    assert [M.moving_average_rate(0.01, t) for t in (0, 1, 9, 99, 500)] == pytest.approx([1.0, 0.5, 0.1, 0.01, 0.01])
