"""EnsembleMLP, TanhGaussianActor, critic surgery, and ACA's fixed point at t = 0."""

import copy
import math

import pytest
import torch
from torch import nn

from rllib_o2o import maths as M
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor, critic_from_baseline


def _reference_forward(net: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
    """Member by member with plain matmuls: what the stacked forward must equal."""
    outs = []
    for e in range(net.num_members):
        h = x if x.dim() == 2 else x[e]
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = h @ w[e] + b[e]
            if i < len(net.weights) - 1:
                h = torch.relu(h)
        outs.append(h)
    return torch.stack(outs)


# ---------------------------------------------------------------- EnsembleMLP


def test_ensemble_matches_per_member_loop_and_shapes():
    torch.manual_seed(0)
    net = EnsembleMLP(3, 5, 2, hidden=(16, 8))
    assert (net.num_members, net.in_dim, net.out_dim, net.hidden) == (3, 5, 2, (16, 8))
    assert [tuple(w.shape) for w in net.weights] == [(3, 5, 16), (3, 16, 8), (3, 8, 2)]
    assert [tuple(b.shape) for b in net.biases] == [(3, 1, 16), (3, 1, 8), (3, 1, 2)]
    shared = torch.randn(7, 5)
    per_member = torch.randn(3, 7, 5)
    assert net(shared).shape == (3, 7, 2)
    torch.testing.assert_close(net(shared), _reference_forward(net, shared), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(net(per_member), _reference_forward(net, per_member), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        net(torch.randn(2, 7, 5))


def test_ensemble_members_are_independent_and_initialised_like_linear():
    torch.manual_seed(0)
    net = EnsembleMLP(2, 64, 1, hidden=(256,))
    w0 = net.weights[0]
    assert not torch.equal(w0[0], w0[1])
    assert not torch.equal(net(torch.randn(4, 64))[0], net(torch.randn(4, 64))[1])
    bound = 1 / math.sqrt(64)  # nn.Linear(64, 256)'s weight and bias bound
    assert w0.abs().max() <= bound and w0.abs().max() > 0.95 * bound
    assert net.biases[0].abs().max() <= bound
    assert w0.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-b, b) has std b/sqrt(3)
    assert net.weights[1].abs().max() <= 1 / math.sqrt(256)


def test_ensemble_parameter_names_and_activation():
    net = EnsembleMLP(2, 3, 1, hidden=(4,), activation=nn.Tanh)
    assert [n for n, _ in net.named_parameters()] == ["weights.0", "weights.1", "biases.0", "biases.1"]
    x = torch.randn(5, 3)
    w, b = net.weights, net.biases
    expected = torch.stack([torch.tanh(x @ w[0][e] + b[0][e]) @ w[1][e] + b[1][e] for e in range(2)])
    torch.testing.assert_close(net(x), expected)


def test_layer_normalised_ensemble_is_each_member_linear_then_torch_layer_norm_then_relu():
    torch.manual_seed(0)
    net = EnsembleMLP(3, 5, 1, hidden=(8, 6), layer_norm=True)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["weights.0", "weights.1", "weights.2", "biases.0", "biases.1", "biases.2",
                     "norm_gains.0", "norm_gains.1", "norm_biases.0", "norm_biases.1"]
    with torch.no_grad():  # gains and biases away from their start (1, 0), so that the test sees them
        for p in (*net.norm_gains, *net.norm_biases):
            p.normal_()
    x = torch.randn(7, 5)
    expected = []
    for e in range(3):
        h = x
        for i in range(2):
            norm = nn.LayerNorm(net.hidden[i], eps=1e-5)
            with torch.no_grad():
                norm.weight.copy_(net.norm_gains[i][e, 0])
                norm.bias.copy_(net.norm_biases[i][e, 0])
            h = torch.relu(norm(h @ net.weights[i][e] + net.biases[i][e]))
        expected.append(h @ net.weights[2][e] + net.biases[2][e])
    torch.testing.assert_close(net(x), torch.stack(expected), rtol=1e-5, atol=1e-5)
    # no norm parameters without layer_norm: old checkpoints keep their keys
    assert not any(n.startswith("norm_") for n, _ in EnsembleMLP(3, 5, 1, hidden=(8, 6)).named_parameters())
    # members: only those, in the order given, each exactly as in the full ensemble (REDQ's target pair)
    pair = torch.tensor([2, 0])
    torch.testing.assert_close(net(x, pair), torch.stack(expected)[pair], rtol=1e-5, atol=1e-5)
    assert torch.equal(net(x, pair), net(x)[pair])
    assert torch.equal(net(x.expand(2, 7, 5), pair), net(x, pair))
    with pytest.raises(ValueError, match=r"\[2, B, 5\]"):
        net(x.expand(3, 7, 5), pair)


# ---------------------------------------------------------------- actor


def test_actor_shapes_and_log_std_clamp():
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 3, hidden=(32, 32))
    mean, log_std = actor(torch.randn(10, 4))
    assert mean.shape == log_std.shape == (10, 3)
    with torch.no_grad():
        actor.head.bias[3:] = 100.0
    assert torch.all(actor(torch.randn(10, 4))[1] == M.LOG_STD_MAX)
    with torch.no_grad():
        actor.head.bias[3:] = -100.0
    assert torch.all(actor(torch.randn(10, 4))[1] == M.LOG_STD_MIN)


# ---------------------------------------------------------------- critic surgery


def test_critic_from_baseline_equals_baseline_for_every_action():
    torch.manual_seed(0)
    obs_dim, act_dim = 11, 3
    z = EnsembleMLP(2, obs_dim, 1)
    r = critic_from_baseline(z, act_dim)
    assert (r.num_members, r.in_dim, r.out_dim, r.hidden) == (2, obs_dim + act_dim, 1, z.hidden)
    obs = torch.randn(512, obs_dim) * 3
    for scale in (1.0, 1e3):  # actions in [-1, 1] and far outside it
        act = (torch.rand(512, act_dim) * 2 - 1) * scale
        assert torch.equal(r(torch.cat([obs, act], -1)), z(obs))
    # Bitwise equality needs the same GEMM reduction order; BLAS may take another
    # path for a single row (MKL GEMV differs by ~1 ulp), hence atol there.
    one = torch.randn(1, obs_dim)
    torch.testing.assert_close(r(torch.cat([one, torch.rand(1, act_dim)], -1)), z(one), rtol=0, atol=1e-6)


def test_critic_from_baseline_copies_parameters_and_zeroes_action_rows():
    torch.manual_seed(1)
    z = EnsembleMLP(2, 5, 1, hidden=(16, 16)).double()
    r = critic_from_baseline(z, 2)
    assert r.weights[0].dtype == torch.float64
    assert torch.equal(r.weights[0][:, :5], z.weights[0])
    assert torch.equal(r.weights[0][:, 5:], torch.zeros(2, 2, 16, dtype=torch.float64))
    for a, b in zip(list(r.weights)[1:] + list(r.biases), list(z.weights)[1:] + list(z.biases)):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    # R must learn the action dependence online: its action rows get gradient.
    x = torch.cat([torch.randn(64, 5), torch.rand(64, 2) * 2 - 1], -1).double()
    r(x).square().sum().backward()
    assert r.weights[0].grad[:, 5:].abs().sum(dim=(1, 2)).min() > 0
    assert z.weights[0].grad is None


# ---------------------------------------------------------------- fixed point at t = 0


def _actor_gradients(actor, pi0, critic_r, critic_q, obs, sample=M.tanh_gaussian_rsample):
    """(ACA, SAC) actor-loss gradients on the same reparameterised samples."""
    mean, log_std = actor(obs)
    action, log_prob = sample(mean, log_std)
    mean0, log_std0 = pi0(obs)
    l = M.clipped_log_prob(
        M.tanh_gaussian_log_prob(mean0, log_std0, action), M.log_prob_clip_threshold(mean0, log_std0, beta=7.0)
    )
    sa = torch.cat([obs, action], -1)
    aca = M.aca_actor_loss(1.0, log_prob, critic_r(sa).min(0).values.squeeze(-1), 1.0, l)
    sac = M.sac_actor_loss(1.0, log_prob, critic_q(sa).min(0).values.squeeze(-1))
    params = list(actor.parameters())
    g_aca = torch.autograd.grad(aca, params, retain_graph=True)
    g_sac = torch.autograd.grad(sac, params)
    norm = lambda gs: torch.sqrt(sum(g.square().sum() for g in gs))  # noqa: E731
    return norm(g_aca), norm(g_sac)


def _at_the_hand_over(obs_dim=5, act_dim=2, hidden=(32, 32)):
    """(actor = pi0, frozen pi0, R with no action dependence, a random Q, obs_dim, act_dim); seed 0."""
    torch.manual_seed(0)
    pi0 = TanhGaussianActor(obs_dim, act_dim, hidden)
    with torch.no_grad():  # moderate std (~0.4), so tanh is not saturated
        pi0.head.weight[act_dim:] *= 0.1
        pi0.head.bias[act_dim:] = math.log(0.4)
    actor = copy.deepcopy(pi0)
    pi0.requires_grad_(False)
    critic_r = critic_from_baseline(EnsembleMLP(2, obs_dim, 1, hidden), act_dim)
    critic_q = EnsembleMLP(2, obs_dim + act_dim, 1, hidden)
    return actor, pi0, critic_r, critic_q, obs_dim, act_dim


def test_reference_policy_is_a_fixed_point_of_the_aca_actor_loss():
    """At t = 0 (w = alpha = 1, R(s,a) = Z(s)) the ACA actor loss is, up to the
    inactive clip, E_s[ KL(pi || pi0) ] - E[Z]. Its gradient at pi = pi0 is exactly
    zero in expectation: Z has no action dependence, and per sample the pathwise
    terms of log pi(a) and log pi0(a) cancel (same function at pi = pi0), leaving
    the score E_pi[grad log pi] = 0. The Monte Carlo estimate is pure noise,
    O(1/sqrt(N)) (~0.015 of SAC's gradient at N = 80k; ~0.03 at 20k), while plain
    SAC on a random offline Q, or ACA with pi away from pi0, has an O(1) gradient.
    """
    actor, pi0, critic_r, critic_q, obs_dim, act_dim = _at_the_hand_over()
    obs = torch.randn(4000, obs_dim).repeat(20, 1)  # 80k (state, sample) pairs

    g_aca, g_sac = _actor_gradients(actor, pi0, critic_r, critic_q, obs)
    assert g_aca / g_sac < 0.05  # 0.010-0.016 over seeds 0-5

    # The check has power: shift pi's mean by 0.3 and the KL gradient is O(1).
    with torch.no_grad():
        actor.head.bias[:act_dim] += 0.3
    g_aca_moved, g_sac_moved = _actor_gradients(actor, pi0, critic_r, critic_q, obs[:20_000])
    assert g_aca_moved / g_sac_moved > 0.5  # ~2 measured


def test_with_the_path_only_log_prob_the_reference_policy_is_a_noiseless_fixed_point():
    """The same t = 0 setting on a batch of 256 states: the full reparameterised ACA gradient is the
    score's noise (what Adam turns into steps away from pi0 online), the path-only one is zero up to
    float error (the clip at beta = 7 std-devs is inactive), and both follow a moved policy back."""
    actor, pi0, critic_r, critic_q, obs_dim, act_dim = _at_the_hand_over()
    obs = torch.randn(256, obs_dim)
    g_full, g_sac = _actor_gradients(actor, pi0, critic_r, critic_q, obs)
    g_path, _ = _actor_gradients(actor, pi0, critic_r, critic_q, obs, M.tanh_gaussian_rsample_path_only)
    assert g_path / g_sac < 1e-5 and g_full / g_sac > 0.05
    with torch.no_grad():
        actor.head.bias[:act_dim] += 0.3
    g_path_moved, g_sac_moved = _actor_gradients(actor, pi0, critic_r, critic_q, obs,
                                                 M.tanh_gaussian_rsample_path_only)
    assert g_path_moved / g_sac_moved > 0.5
