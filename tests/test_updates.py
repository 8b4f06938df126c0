"""O2OSACTorchLearner's fast path against a straightforward re-derivation, and the aligned module.

The fast path (`o2o_update` -> `_one_update`) runs on a module built without Ray and a
stand-in `self` that provides only what those methods read. The expected values are
re-derived here without `rllib_o2o.maths`: critics member by member with plain matmuls,
log-densities with torch.distributions, Adam's first step written out. O2OSAC through RLlib and
Ray: test_o2o_sac.py.
"""

from __future__ import annotations

import copy
import functools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import O2OSACTorchLearner
from rllib_o2o.algorithms.o2o_sac.updates import (
    ACAUpdate,
    BalancedReplayUpdate,
    CQLUpdate,
    IQLUpdate,
    RLPDUpdate,
    SACMLUpdate,
    SACUpdate,
    WSRLUpdate,
)
from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import O2OSACTorchRLModule, handover_weights

OBS_DIM, ACT_DIM, BATCH = 4, 2, 64
LR = 3e-4
INITIAL_ALPHA = 0.7
OBS_SPACE = Box(-10.0, 10.0, (OBS_DIM,), np.float32)
ACT_SPACE = Box(-2.0, 2.0, (ACT_DIM,), np.float32)


# ---------------------------------------------------------------- harness


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # conftest.py


class RecordingAdam(torch.optim.Adam):
    """Adam that keeps a copy of the gradients it was asked to apply (after any clipping)."""

    def step(self, closure=None):
        self.applied = [None if p.grad is None else p.grad.detach().clone() for p in self.param_groups[0]["params"]]
        return super().step(closure)


def build_module(hidden=(32, 32), initial_alpha=INITIAL_ALPHA, obs_space=OBS_SPACE, act_space=ACT_SPACE,
                 density_ratio=False, num_critics=2, state_value=False, actor_ema=False):
    module = RLModuleSpec(
        module_class=O2OSACTorchRLModule, observation_space=obs_space, action_space=act_space,
        model_config={"hidden": list(hidden), "initial_alpha": initial_alpha, "density_ratio": density_ratio,
                      "num_critics": num_critics, "state_value": state_value, "actor_ema": actor_ema},
    ).build()
    module.make_target_networks()
    return module


UPDATES = {"sac": SACUpdate, "sacml": SACMLUpdate, "aca": ACAUpdate, "cql": CQLUpdate, "iql": IQLUpdate,
           "balanced-replay": BalancedReplayUpdate, "rlpd": RLPDUpdate, "wsrl": WSRLUpdate}


def make_config(mode, **kw):
    values = dict(update_class=UPDATES[mode], gamma=0.99, tau=0.005, alpha_bc=30.0, clip_beta=2.0, use_log_prob_clip=True,
                  w_schedule=(1.0, 10.0, 0.2), entropy_scale=1.0, actor_grad_clip=None,
                  critic_includes_reference=True, path_only_log_prob=False, reference_entropy_target=False,
                  actor_warmup_updates=0, offline_entropy_bonus=0.0, num_critics=2, critic_target_members=None, actor_q_reduction="min",
                  policy_update_interval=1, torch_compile_learner=False, actor_ema=0.0, actor_lr_decay_updates=None, min_alpha=0.0,
                  iql_expectile=0.7, iql_temperature=3.0, iql_max_weight=100.0, iql_advantage_scale=1.0)
    values.update(kw)
    return SimpleNamespace(**values)


def fake_learner(module, config):
    """What `o2o_update` and `_one_update` read from `self`, and nothing else: the config's update
    object, whose losses run eagerly."""
    critic_params = list(module.critic.parameters())
    if hasattr(module, "state_value"):
        critic_params += list(module.state_value.parameters())
    optim = {
        "critic": RecordingAdam(critic_params, lr=LR),
        "actor": RecordingAdam(list(module.actor.parameters()), lr=LR),
        "alpha": RecordingAdam([module.log_alpha], lr=LR),
    }
    if hasattr(module, "density_ratio"):
        optim["density"] = RecordingAdam(list(module.density_ratio.parameters()), lr=LR)
    update = config.update_class(config)
    fake = SimpleNamespace(
        _module={"default_policy": module},
        get_optimizer=lambda module_id, name: optim[name],
        _device=torch.device("cpu"),
        _update=update,
        _critic_loss_fn=update.critic_loss,
        _actor_loss_fn=update.actor_loss,
        _diagnostics=O2OSACTorchLearner._diagnostics,
        _actor_base_lr=LR,
    )
    fake._one_update = functools.partial(O2OSACTorchLearner._one_update, fake)
    fake.o2o_update = functools.partial(O2OSACTorchLearner.o2o_update, fake)
    return fake, optim


def make_batch(num_updates=1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (num_updates, BATCH)
    return {
        "obs": rng.normal(size=(*shape, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-0.95, 0.95, size=(*shape, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=shape).astype(np.float32),
        "new_obs": rng.normal(size=(*shape, OBS_DIM)).astype(np.float32),
        "terminateds": (rng.random(shape) < 0.25).astype(np.float32),
    }


def perturb_reference(module, seed=1, scale=0.3):
    """pi0 = the actor plus noise, so the reference log-likelihood differs from log pi."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.ref_actor.load_state_dict(module.actor.state_dict())
        for p in module.ref_actor.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------- the straightforward maths


def member_forward(weights, biases, x, e):
    """Critic member e: x @ W + b per layer, ReLU between layers."""
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w[e] + b[e]
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def member_qs(weights, biases, obs, act):
    """[E, B]: every critic member's value."""
    x = torch.cat([obs, act], -1)
    return torch.stack([member_forward(weights, biases, x, e) for e in range(len(weights[0]))])


def min_q(weights, biases, obs, act):
    return member_qs(weights, biases, obs, act).min(0).values


def squashed_log_prob_at_u(mean, log_std, u):
    """log N(u) - log |d tanh(u)/du|, summed over action dims."""
    normal = Normal(mean, log_std.exp())
    return (normal.log_prob(u) - TanhTransform().log_abs_det_jacobian(u, torch.tanh(u))).sum(-1)


def reference_l(ref_actor, obs, act, beta, clip=True):
    """l(s,a) = softplus(log pi0(a|s) - c(s)) + c(s), c(s) = min over mu +- beta sigma."""
    mean, log_std = ref_actor(obs)
    u = torch.atanh(act.clamp(-1 + 1e-6, 1 - 1e-6))
    log_pi0 = squashed_log_prob_at_u(mean, log_std, u)
    if not clip:
        return log_pi0, log_pi0, None
    sigma = log_std.exp()
    c = torch.minimum(squashed_log_prob_at_u(mean, log_std, mean - beta * sigma),
                      squashed_log_prob_at_u(mean, log_std, mean + beta * sigma))
    return torch.nn.functional.softplus(log_pi0 - c) + c, log_pi0, c


def expected_update(module, config, b, weight, seed):
    """One SAC / SAC+ML / ACA update written out; returns losses and the gradients Adam must apply."""
    aca, sacml = config.update_class is ACAUpdate, config.update_class is SACMLUpdate
    alpha = math.exp(float(module.log_alpha.detach()))
    obs, act, rew, new_obs, done = (b[k] for k in ("obs", "actions", "rewards", "new_obs", "terminateds"))
    actor = copy.deepcopy(module.actor)
    ref_actor = copy.deepcopy(module.ref_actor)
    cw = [w.detach().clone().requires_grad_() for w in module.critic.weights]
    cb = [x.detach().clone().requires_grad_() for x in module.critic.biases]
    tw = [w.detach().clone() for w in module.target_critic.weights]
    tb = [x.detach().clone() for x in module.target_critic.biases]

    num_critics = len(cw[0])
    torch.manual_seed(seed)
    eps_next = torch.randn(BATCH, ACT_DIM)
    members = list(range(num_critics))  # the target's members: all, or a random subset drawn after a'
    if config.critic_target_members not in (None, num_critics):
        members = torch.randperm(num_critics)[:config.critic_target_members].tolist()
    eps_bonus = torch.randn(BATCH, ACT_DIM) if aca and config.offline_entropy_bonus else None  # a0 ~ pi0(.|s')
    eps_pi = torch.randn(BATCH, ACT_DIM)
    eps_ref = torch.randn(BATCH, ACT_DIM)  # pi0's entropy sample, drawn after the actor's

    # critic
    with torch.no_grad():
        m2, ls2 = actor(new_obs)
        u2 = m2 + ls2.exp() * eps_next
        a2 = torch.tanh(u2)
        logp2 = squashed_log_prob_at_u(m2, ls2, u2)
        next_qs = member_qs(tw, tb, new_obs, a2)
        soft_next = next_qs[members].min(0).values - alpha * logp2
        subset_matters = not torch.equal(next_qs[members].min(0).values, next_qs.min(0).values)
        if aca:
            soft_next = soft_next + weight * reference_l(ref_actor, new_obs, a2, config.clip_beta)[0]
        if eps_bonus is not None:  # beta_t H(pi0(.|s')) ~ -beta_t log pi0(a0|s'), beta_t = beta_0 w_t / w_0
            m0n, ls0n = ref_actor(new_obs)
            beta = config.offline_entropy_bonus * weight / config.w_schedule[0]
            soft_next = soft_next - beta * squashed_log_prob_at_u(m0n, ls0n, m0n + ls0n.exp() * eps_bonus)
        y = rew + config.gamma * (1 - done) * soft_next
        fits_l = aca and config.critic_includes_reference
        data_l = weight * reference_l(ref_actor, obs, act, config.clip_beta)[0] if fits_l else 0.0
    x = torch.cat([obs, act], -1)
    critic_loss = sum(((member_forward(cw, cb, x, e) + data_l - y) ** 2).mean() for e in range(num_critics))
    critic_grads = torch.autograd.grad(critic_loss, cw + cb)
    with torch.no_grad():  # Adam's first step: m_hat = g, v_hat = g^2
        new_cw = [w - LR * g / (g.abs() + 1e-8) for w, g in zip(cw, critic_grads[: len(cw)])]
        new_cb = [x - LR * g / (g.abs() + 1e-8) for x, g in zip(cb, critic_grads[len(cw):])]

    # actor, against the critic after its step
    mean, log_std = actor(obs)
    u = mean + log_std.exp() * eps_pi
    a_pi = torch.tanh(u)
    logp = (squashed_log_prob_at_u(mean.detach(), log_std.detach(), u) if config.path_only_log_prob
            else squashed_log_prob_at_u(mean, log_std, u))
    q_pi = member_qs(new_cw, new_cb, obs, a_pi)
    q_pi = q_pi.mean(0) if config.actor_q_reduction == "mean" else q_pi.min(0).values
    out = {"critic_loss": critic_loss.detach(), "log_prob": logp.detach().mean(), "alpha": alpha,
           "y": y, "data_l": data_l, "subset_matters": subset_matters}
    if aca:
        l_pi = reference_l(ref_actor, obs, a_pi, config.clip_beta)[0]
        actor_loss = (alpha * logp - q_pi - weight * l_pi).mean()
    elif sacml:
        lam = config.alpha_bc / q_pi.detach().abs().mean()
        u_data = torch.atanh(act.clamp(-1 + 1e-6, 1 - 1e-6))
        data_logp = squashed_log_prob_at_u(mean, log_std, u_data)
        actor_loss = lam * (alpha * logp - q_pi).mean() - data_logp.mean()
        out["ml_lambda"] = lam
        out["data_log_prob"] = data_logp.detach().mean()
    else:
        actor_loss = (alpha * logp - q_pi).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(actor.parameters()))
    out["actor_loss"] = actor_loss.detach()
    out["actor_grads"] = actor_grads
    out["critic_grads"] = critic_grads
    out["new_critic"] = new_cw + new_cb
    target_entropy = -config.entropy_scale * ACT_DIM
    if aca and config.reference_entropy_target:  # -log pi0(a0|s), a0 ~ pi0, per state
        with torch.no_grad():
            m0, ls0 = ref_actor(obs)
            target_entropy = -squashed_log_prob_at_u(m0, ls0, m0 + ls0.exp() * eps_ref)
    out["alpha_grad"] = -(logp.detach() + target_entropy).mean()  # d/d log_alpha of -E[log_alpha (logp + H)]
    return out


def run_one_update(mode, seed=0, **config_kw):
    torch.manual_seed(100)
    module = build_module(num_critics=config_kw.get("num_critics", 2))
    config = make_config(mode, **config_kw)
    if mode == "aca":
        perturb_reference(module)
        module.num_updates.fill_(3000)  # w = 1 - 3000 / (10 * 1000) = 0.7
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    fake, optim = fake_learner(module, config)
    batch = make_batch(1, seed=seed)
    weight = 0.7 if mode == "aca" else 0.0
    expected = expected_update(module, config, {k: torch.from_numpy(v[0]) for k, v in batch.items()},
                               weight, seed=1234)
    torch.manual_seed(1234)
    metrics = fake.o2o_update(batch)
    return module, config, optim, before, expected, metrics


def _norm(tensors):
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


# ---------------------------------------------------------------- losses and gradients


# ENSEMBLE: 5 critics, the target's min over a random pair, the actor on the members' mean.
ENSEMBLE = dict(num_critics=5, critic_target_members=2, actor_q_reduction="mean")
# BONUS: the target's state bonus beta_t H(pi0(.|s')), beta_t = 0.6 * 0.7 / 1 (w_t = 0.7 at update 3000).
BONUS = dict(offline_entropy_bonus=0.6)


@pytest.mark.parametrize("mode, critic_includes_reference, path_only_and_reference_entropy, critics",
                         [("sac", True, False, {}), ("sacml", True, False, {}), ("aca", True, False, {}),
                          ("aca", False, False, {}), ("aca", False, True, {}), ("aca", False, False, ENSEMBLE),
                          ("sac", True, False, ENSEMBLE), ("aca", False, True, BONUS)])
def test_one_update_matches_straightforward_maths(mode, critic_includes_reference, path_only_and_reference_entropy,
                                                  critics):
    clip = 0.25 if mode == "aca" else None
    module, config, optim, before, exp, metrics = run_one_update(
        mode, actor_grad_clip=clip, critic_includes_reference=critic_includes_reference,
        path_only_log_prob=path_only_and_reference_entropy, reference_entropy_target=path_only_and_reference_entropy,
        **critics)
    assert module.critic.num_members == config.num_critics
    assert exp["subset_matters"] == (config.critic_target_members is not None)

    assert metrics["critic_loss"] == pytest.approx(float(exp["critic_loss"]), rel=1e-5)
    assert metrics["actor_loss"] == pytest.approx(float(exp["actor_loss"]), rel=1e-4, abs=1e-5)
    assert metrics["log_prob"] == pytest.approx(float(exp["log_prob"]), rel=1e-5, abs=1e-6)
    assert metrics["alpha"] == pytest.approx(INITIAL_ALPHA, rel=1e-6)
    assert metrics["num_updates_lifetime"] == (3001 if mode == "aca" else 1)
    if mode == "sacml":
        assert metrics["ml_lambda"] == pytest.approx(float(exp["ml_lambda"]), rel=1e-4)
        assert metrics["data_log_prob"] == pytest.approx(float(exp["data_log_prob"]), rel=1e-5, abs=1e-6)
    if mode == "aca":
        assert metrics["reference_weight"] == pytest.approx(0.7, rel=1e-6)
        assert metrics["offline_entropy_bonus_weight"] == pytest.approx(0.42 if critics == BONUS else 0.0, rel=1e-6)
        assert "ml_lambda" not in metrics
    else:
        assert "reference_weight" not in metrics

    # The gradients Adam applied are the gradients of the losses above.
    for got, want in zip(optim["critic"].applied, exp["critic_grads"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(optim["alpha"].applied[0], exp["alpha_grad"].reshape(()), rtol=1e-5, atol=1e-6)
    raw_norm = _norm(exp["actor_grads"])
    scale = min(1.0, clip / raw_norm) if clip else 1.0
    if clip:
        assert raw_norm > 1.5 * clip, "precondition: the clip must be active for this test to mean anything"
        assert _norm(optim["actor"].applied) == pytest.approx(clip, rel=1e-4)
    for got, want in zip(optim["actor"].applied, exp["actor_grads"]):
        torch.testing.assert_close(got, want * scale, rtol=2e-4, atol=1e-6)


def test_aca_reference_term_is_not_trivial():
    """The perturbed pi0 puts some data actions below the clip level c(s) and some above."""
    torch.manual_seed(100)
    module = build_module()
    perturb_reference(module)
    b = make_batch(1)
    obs, act = torch.from_numpy(b["obs"][0]), torch.from_numpy(b["actions"][0])
    with torch.no_grad():
        l, log_pi0, c = reference_l(module.ref_actor, obs, act, beta=2.0)
        own = ACAUpdate(make_config("aca"))._reference_term(obs, act, module.ref_actor(obs))
        log_pi = squashed_log_prob_at_u(*module.actor(obs), torch.atanh(act))
    torch.testing.assert_close(own, l, rtol=1e-5, atol=1e-5)
    assert (log_pi0 < c).any() and (log_pi0 > c).any()
    assert not torch.allclose(log_pi0, log_pi, atol=1e-2)
    with torch.no_grad():
        unclipped = ACAUpdate(make_config("aca", use_log_prob_clip=False))._reference_term(obs, act,
                                                                                       module.ref_actor(obs))
    torch.testing.assert_close(unclipped, log_pi0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sac", "aca"])
def test_update_moves_critic_and_actor_not_reference_and_polyak_target(mode):
    module, config, optim, before, exp, _ = run_one_update(mode, actor_grad_clip=0.25 if mode == "aca" else None)
    after = module.state_dict()
    critic_names = [k for k in after if k.startswith("critic.")]
    # Critic: exactly Adam's first step on the loss above (so it changed).
    for name, want in zip(critic_names, exp["new_critic"]):
        assert not torch.equal(after[name], before[name])
        torch.testing.assert_close(after[name], want, rtol=1e-5, atol=1e-6)
    # Actor moved, by at most lr per element (Adam's first step is lr * g / (|g| + eps)).
    for name in (k for k in after if k.startswith("actor.")):
        delta = (after[name] - before[name]).abs()
        assert delta.max() > 0.5 * LR
        assert delta.max() <= LR * (1 + 1e-4)
    # pi0 is frozen.
    for name in (k for k in after if k.startswith("ref_actor.")):
        assert torch.equal(after[name], before[name]), name
        assert not module.get_parameter(name).requires_grad
    # Target: theta_bar <- theta_bar + tau (theta - theta_bar), with the critic after its step.
    for name in critic_names:
        tname = "target_" + name
        want = before[tname] + config.tau * (after[name] - before[tname])
        torch.testing.assert_close(after[tname], want, rtol=0, atol=1e-7)
        assert not torch.equal(after[tname], before[tname])
    assert float(after["log_alpha"]) != pytest.approx(math.log(INITIAL_ALPHA), abs=1e-6)
    assert abs(float(after["log_alpha"]) - math.log(INITIAL_ALPHA)) <= LR * (1 + 1e-4)


def test_actor_warmup_trains_the_critic_only_then_everything():
    torch.manual_seed(100)
    module = build_module()
    perturb_reference(module)
    config = make_config("aca", actor_warmup_updates=3, actor_grad_clip=0.25)
    fake, _ = fake_learner(module, config)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    fake.o2o_update(make_batch(3))  # updates 0, 1, 2: inside the warm-up
    after = module.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("actor.") or k == "log_alpha")
    assert not torch.equal(after["critic.weights.0"], before["critic.weights.0"])
    fake.o2o_update(make_batch(1, seed=1))  # update 3: the actor and the temperature train
    after = module.state_dict()
    assert not torch.equal(after["actor.head.weight"], before["actor.head.weight"])
    assert float(after["log_alpha"]) != float(before["log_alpha"])


def test_policy_update_interval_steps_the_actor_and_temperature_once_per_interval_critic_updates():
    torch.manual_seed(100)
    module = build_module(num_critics=10)
    config = make_config("rlpd", num_critics=10, critic_target_members=2, actor_q_reduction="mean",
                         policy_update_interval=4)
    fake, optim = fake_learner(module, config)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    fake.o2o_update(make_batch(3))  # critic updates 0, 1, 2: the actor's step comes after the 4th
    after = module.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("actor.") or k == "log_alpha")
    assert optim["critic"].state_dict()["state"][0]["step"] == 3 and not optim["actor"].state_dict()["state"]
    metrics = fake.o2o_update(make_batch(5, seed=1))  # updates 3..7: the actor steps after 3 and after 7
    assert optim["critic"].state_dict()["state"][0]["step"] == 8
    assert optim["actor"].state_dict()["state"][0]["step"] == 2
    assert optim["alpha"].state_dict()["state"][0]["step"] == 2
    assert "actor_loss" in metrics and "critic_loss" in metrics  # each a mean over the updates that made it


def test_rlpd_targets_half_the_action_dimension_as_entropy():
    module = build_module()
    update = RLPDUpdate(make_config("rlpd"))
    assert update.entropy_target(module, None) == -0.5 * ACT_DIM
    assert SACUpdate(make_config("sac")).entropy_target(module, None) == -1.0 * ACT_DIM


def test_wsrl_target_has_no_entropy_term():
    # the same draws: WSRL's TD target at temperature alpha equals SAC's at temperature 0
    torch.manual_seed(100)
    module = build_module()
    b = {k: torch.from_numpy(v[0]) for k, v in make_batch(1).items()}
    b.update(reference_weight=torch.tensor(0.0), offline_entropy_bonus_weight=torch.tensor(0.0))
    alpha = torch.tensor(0.7)
    torch.manual_seed(5)
    wsrl_loss, _, _ = WSRLUpdate(make_config("wsrl")).critic_loss(module, b, alpha, False)
    torch.manual_seed(5)
    zero_temperature_loss, _, _ = SACUpdate(make_config("sac")).critic_loss(module, b, torch.tensor(0.0), False)
    torch.manual_seed(5)
    soft_loss, _, _ = SACUpdate(make_config("sac")).critic_loss(module, b, alpha, False)
    torch.testing.assert_close(wsrl_loss, zero_temperature_loss)
    assert not torch.allclose(wsrl_loss, soft_loss)


def test_layer_normalised_critic_module_trains_its_norm_parameters():
    module = RLModuleSpec(
        module_class=O2OSACTorchRLModule, observation_space=OBS_SPACE, action_space=ACT_SPACE,
        model_config={"hidden": [32, 32], "initial_alpha": INITIAL_ALPHA, "num_critics": 10,
                      "critic_layer_norm": True}).build()
    module.make_target_networks()
    assert module.critic.layer_norm and module.target_critic.layer_norm
    fake, _ = fake_learner(module, make_config("rlpd", num_critics=10, critic_target_members=2))
    before = module.critic.norm_gains[0].detach().clone()
    fake.o2o_update(make_batch(2))
    assert not torch.equal(module.critic.norm_gains[0], before)


def test_aca_critic_regresses_r_plus_wl_onto_the_target():
    """The critic loss is sum_i MSE(R_i + w l, y), not sum_i MSE(R_i, y)."""
    _, _, _, before, exp, metrics = run_one_update("aca", actor_grad_clip=0.25)
    assert isinstance(exp["data_l"], torch.Tensor) and exp["data_l"].abs().mean() > 0.1
    b = {k: torch.from_numpy(v[0]) for k, v in make_batch(1).items()}
    cw = [before[f"critic.weights.{i}"] for i in range(3)]
    cb = [before[f"critic.biases.{i}"] for i in range(3)]
    x = torch.cat([b["obs"], b["actions"]], -1)
    q = torch.stack([member_forward(cw, cb, x, e) for e in range(2)])
    assert metrics["q_mean"] == pytest.approx(float(q.mean()), rel=1e-5, abs=1e-6)  # R alone, without w l
    with_l = float(((q + exp["data_l"] - exp["y"]) ** 2).mean(-1).sum())
    without_l = float(((q - exp["y"]) ** 2).mean(-1).sum())
    assert metrics["critic_loss"] == pytest.approx(with_l, rel=1e-5)
    assert metrics["critic_loss"] != pytest.approx(without_l, rel=1e-2)


def test_several_updates_follow_the_w_schedule_and_count():
    torch.manual_seed(100)
    module = build_module()
    perturb_reference(module)
    module.num_updates.fill_(2000)
    config = make_config("aca", w_schedule=(1.0, 5.0, 0.2), actor_grad_clip=0.25)
    fake, _ = fake_learner(module, config)
    metrics = fake.o2o_update(make_batch(3))
    # w_t = max(w_min, w0 - t w0 / (T 1000)) at t = 2000, 2001, 2002
    expected_w = np.mean([max(0.2, 1.0 - t / 5000.0) for t in (2000, 2001, 2002)])
    assert metrics["reference_weight"] == pytest.approx(expected_w, rel=1e-6)
    assert metrics["num_updates_lifetime"] == 2003 == int(module.num_updates)
    # ... and bottoms out at w_min.
    module.num_updates.fill_(10_000)
    assert fake.o2o_update(make_batch(2, seed=1))["reference_weight"] == pytest.approx(0.2)
    assert int(module.num_updates) == 10_002
    for key in ("critic_loss", "actor_loss", "alpha", "q_mean", "log_prob"):
        assert np.isfinite(metrics[key])


def test_sac_mode_ignores_the_reference_policy():
    """With mode "sac" pi0 must not enter any loss: two different pi0 give identical updates."""
    results = []
    for seed in (1, 2):
        torch.manual_seed(100)
        module = build_module()
        perturb_reference(module, seed=seed)
        fake, _ = fake_learner(module, make_config("sac"))
        torch.manual_seed(7)
        fake.o2o_update(make_batch(2))
        results.append({k: v for k, v in module.state_dict().items() if not k.startswith("ref_actor.")})
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


# ---------------------------------------------------------------- the aligned module (spec's invariant)


def test_aligned_module_critic_equals_baseline_for_every_action(pendulum_dir, monkeypatch):
    from gymnasium import make

    from rllib_o2o.networks import TanhGaussianActor
    from rllib_o2o.algorithms.alignment import z_fit

    baselines = []
    original = z_fit.critic_from_baseline

    def capture(z, action_dim):
        baselines.append(copy.deepcopy(z))
        return original(z, action_dim)

    monkeypatch.setattr(z_fit, "critic_from_baseline", capture)
    torch.manual_seed(5)
    pi0 = TanhGaussianActor(3, 1, (32, 32))
    report = z_fit.align({k: v.numpy() for k, v in pi0.state_dict().items()}, str(pendulum_dir), (32, 32),
                         z_fit.AlignSettings(z_steps=60, batch_size=32, curve_every=20, seed=0))
    (z,) = baselines

    env = make("Pendulum-v1")
    module = build_module(obs_space=env.observation_space, act_space=env.action_space)
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in report["weights"].items()}, strict=True)

    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(200, 3, generator=gen)
    with torch.no_grad():
        z_values = z(obs).squeeze(-1)  # [2, B]
        config = make_config("aca", clip_beta=7.0)
        for _ in range(3):
            act = torch.rand(200, 1, generator=gen) * 1.98 - 0.99
            r = module.q_values(obs, act)
            torch.testing.assert_close(r, z_values, rtol=0, atol=1e-5)
            torch.testing.assert_close(module.q_values(obs, act, target=True), z_values, rtol=0, atol=1e-5)
            l = ACAUpdate(config)._reference_term(obs, act, module.ref_actor(obs))
            assert l.std() > 0  # l depends on the action, R does not
            w = 1.0
            torch.testing.assert_close(r + w * l, z_values + l, rtol=0, atol=1e-5)
            # l is pi0's clipped log-likelihood, and pi0 is the given actor.
            want_l, _, _ = reference_l(pi0, obs, act, beta=7.0)
            torch.testing.assert_close(l, want_l, rtol=1e-4, atol=1e-4)
        assert float(module.log_alpha) == 0.0
        assert int(module.num_updates) == 0


# ---------------------------------------------------------------- the baselines' losses, diagnostics, Adam's states


def test_cql_mode_adds_the_conservative_penalty_to_the_critic_loss():
    """cql-sac's offline stage: SAC's critic loss + cql_weight * CQL(H), written out member by member."""
    n, cql_weight = 3, 5.0
    torch.manual_seed(100)
    module = build_module()
    config = make_config("cql", cql_weight=cql_weight, cql_num_actions=n, cql_temperature=1.0)
    fake, optim = fake_learner(module, config)
    batch = make_batch(1, seed=0)
    b = {k: torch.from_numpy(v[0]) for k, v in batch.items()}
    alpha = INITIAL_ALPHA
    cw = [w.detach().clone().requires_grad_() for w in module.critic.weights]
    cb = [x.detach().clone().requires_grad_() for x in module.critic.biases]
    tw = [w.detach().clone() for w in module.target_critic.weights]
    tb = [x.detach().clone() for x in module.target_critic.biases]
    actor = copy.deepcopy(module.actor)

    torch.manual_seed(1234)  # the draws in the learner's order: a' for the target, then CQL's samples
    eps_next = torch.randn(BATCH, ACT_DIM)
    uniform = torch.rand(n, BATCH, ACT_DIM) * 2 - 1
    eps_s, eps_s2 = torch.randn(n, BATCH, ACT_DIM), torch.randn(n, BATCH, ACT_DIM)
    with torch.no_grad():
        m2, ls2 = actor(b["new_obs"])
        u2 = m2 + ls2.exp() * eps_next
        y = b["rewards"] + 0.99 * (1 - b["terminateds"]) * (
            min_q(tw, tb, b["new_obs"], torch.tanh(u2)) - alpha * squashed_log_prob_at_u(m2, ls2, u2))
        samples = [(uniform, torch.full((n, BATCH), -ACT_DIM * math.log(2.0)))]
        for states, eps in ((b["obs"], eps_s), (b["new_obs"], eps_s2)):
            m, ls = actor(states)
            u = m + ls.exp() * eps
            samples.append((torch.tanh(u), squashed_log_prob_at_u(m, ls, u)))
    x = torch.cat([b["obs"], b["actions"]], -1)
    loss = 0.0
    for e in range(2):
        q_data = member_forward(cw, cb, x, e)
        weighted = [member_forward(cw, cb, torch.cat([b["obs"], a[k]], -1), e) - logp[k]
                    for a, logp in samples for k in range(n)]
        penalty = (torch.logsumexp(torch.stack(weighted, -1), -1) - q_data).mean()
        loss = loss + ((q_data - y) ** 2).mean() + cql_weight * penalty
    grads = torch.autograd.grad(loss, cw + cb)

    torch.manual_seed(1234)
    metrics = fake.o2o_update(batch)
    assert metrics["critic_loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert metrics["cql_penalty"] > 0  # logsumexp over 3N sampled actions exceeds Q(data) at init
    for got, want in zip(optim["critic"].applied, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def add_density_batches(batch, seed=0, shift=2.0):
    """Offline rows around 0, online rows shifted by `shift`: a learnable density ratio."""
    rng = np.random.default_rng(seed)
    shape = batch["rewards"].shape
    batch["offline_obs"] = rng.normal(size=(*shape, OBS_DIM)).astype(np.float32)
    batch["offline_actions"] = rng.uniform(-0.9, 0.0, size=(*shape, ACT_DIM)).astype(np.float32)
    batch["online_obs"] = (rng.normal(size=(*shape, OBS_DIM)) + shift).astype(np.float32)
    batch["online_actions"] = rng.uniform(0.0, 0.9, size=(*shape, ACT_DIM)).astype(np.float32)
    return batch


def test_balanced_replay_density_step_by_hand_and_rl_update_unchanged():
    """Balanced Replay: the density-ratio net takes the JS-bound gradient written out here, the
    priorities come from the updated w, and the SAC update itself is exactly plain SAC's."""
    torch.manual_seed(7)
    module = build_module(density_ratio=True)
    plain = copy.deepcopy(module)
    del plain.density_ratio
    config = make_config("balanced-replay", balanced_replay_temperature=5.0)
    fake, optim = fake_learner(module, config)
    batch = add_density_batches(make_batch(1, seed=3))
    dw = [w.detach().clone().requires_grad_() for w in module.density_ratio.weights]
    db = [x.detach().clone().requires_grad_() for x in module.density_ratio.biases]

    def w_of(obs, act, weights=dw, biases=db):
        x = torch.cat([torch.from_numpy(obs[0]), torch.from_numpy(act[0])], -1)
        return torch.relu(member_forward(weights, biases, x, 0))

    w_off, w_on = w_of(batch["offline_obs"], batch["offline_actions"]), w_of(batch["online_obs"], batch["online_actions"])
    loss = torch.log((w_off + 1) / 2).mean() - torch.log(2 * w_on / (w_on + 1)).mean()
    grads = torch.autograd.grad(loss, dw + db)

    torch.manual_seed(1234)
    metrics = fake.o2o_update(batch)
    assert metrics["density_loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    for got, want in zip(optim["density"].applied, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # priorities: w(s,a)^(1/T) / mean_offline w^(1/T) with the updated network
    with torch.no_grad():
        new_w, new_b = list(module.density_ratio.weights), list(module.density_ratio.biases)
        w_batch = w_of(batch["obs"], batch["actions"], new_w, new_b)
        w_off_new = w_of(batch["offline_obs"], batch["offline_actions"], new_w, new_b)
    expected = (w_batch ** 0.2 / (w_off_new ** 0.2).mean()).clamp(1e-3, 1e3)
    assert metrics["priorities"].shape == (1, BATCH)
    np.testing.assert_allclose(metrics["priorities"][0], expected.numpy(), rtol=1e-5)

    fake_plain, _ = fake_learner(plain, make_config("sac"))
    torch.manual_seed(1234)
    plain_metrics = fake_plain.o2o_update({k: batch[k] for k in ("obs", "actions", "rewards", "new_obs",
                                                                  "terminateds")})
    for key in ("critic_loss", "actor_loss", "q_mean", "log_prob"):
        assert metrics[key] == pytest.approx(plain_metrics[key], rel=1e-6)


def test_balanced_replay_density_ratio_separates_online_from_offline_rows():
    torch.manual_seed(0)
    module = build_module(density_ratio=True)
    fake, _ = fake_learner(module, make_config("balanced-replay", balanced_replay_temperature=1.0))
    batch = add_density_batches(make_batch(300, seed=4), seed=5)
    batch["obs"], batch["actions"] = batch["online_obs"].copy(), batch["online_actions"].copy()
    batch["obs"][:, : BATCH // 2] = batch["offline_obs"][:, : BATCH // 2]
    batch["actions"][:, : BATCH // 2] = batch["offline_actions"][:, : BATCH // 2]
    metrics = fake.o2o_update(batch)
    last = metrics["priorities"][-1]
    assert last[BATCH // 2:].mean() > 3 * last[: BATCH // 2].mean()  # online-like rows replayed more
    assert metrics["density_ratio_online"] > metrics["density_ratio_offline"]


def test_set_module_weights_keeps_a_fresh_density_net_for_weights_without_one():
    class Holder:
        _module = {"default_policy": build_module(density_ratio=True)}

    before = Holder._module["default_policy"].density_ratio.weights[0].detach().clone()
    offline = {k: v.numpy() for k, v in build_module().state_dict().items()}
    O2OSACTorchLearner.set_module_weights(Holder(), offline)
    module = Holder._module["default_policy"]
    torch.testing.assert_close(module.density_ratio.weights[0], before)
    torch.testing.assert_close(module.actor.head.weight, torch.from_numpy(offline["actor.head.weight"]))
    with pytest.raises(RuntimeError):  # anything else missing is still an error
        O2OSACTorchLearner.set_module_weights(Holder(), {k: v for k, v in offline.items() if k != "log_alpha"})


def test_critic_without_reference_term_fits_r_alone():
    """critic_includes_reference=False: the critic regresses R (not R + w l) on the same target."""
    _, _, _, _, with_l, _ = run_one_update("aca", critic_includes_reference=True)
    _, _, _, _, without_l, metrics = run_one_update("aca", critic_includes_reference=False)
    torch.testing.assert_close(with_l["y"], without_l["y"])  # same TD target
    assert isinstance(without_l["data_l"], float) and without_l["data_l"] == 0.0
    assert float(with_l["data_l"].abs().mean()) > 0.1  # precondition: w l is not negligible here
    assert metrics["critic_loss"] == pytest.approx(float(without_l["critic_loss"]), rel=1e-5)
    assert metrics["critic_loss"] != pytest.approx(float(with_l["critic_loss"]), rel=1e-2)


@pytest.mark.parametrize("mode", ["sac", "aca"])
def test_online_diagnostics_describe_the_module_after_the_updates(mode):
    module, _, _, _, _, metrics = run_one_update(mode)
    obs = torch.from_numpy(make_batch(1, seed=0)["obs"][0])
    with torch.no_grad():
        mean, log_std = module.actor(obs)
        ref_mean, ref_log_std = module.ref_actor(obs)
    kl = torch.distributions.kl_divergence(Normal(mean, log_std.exp()), Normal(ref_mean, ref_log_std.exp()))
    assert metrics["kl_to_reference"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-4)
    shift = (torch.tanh(mean) - torch.tanh(ref_mean)).abs().mean()
    assert metrics["mean_action_shift"] == pytest.approx(float(shift), rel=1e-5)
    assert metrics["policy_std"] == pytest.approx(float(log_std.exp().mean()), rel=1e-5)
    action_rows = module.critic.weights[0].detach()[:, module.obs_dim:, :]
    assert metrics["critic_action_weight_norm"] == pytest.approx(float(action_rows.norm()), rel=1e-5)
    assert metrics["td_error_rms"] == pytest.approx(math.sqrt(metrics["critic_loss"] / 2), rel=1e-4)


def test_value_estimates_are_the_critics_value_of_each_actors_mean_action_and_draw_no_random_number():
    module = build_module(actor_ema=True)
    with torch.no_grad():
        for p in module.ema_actor.parameters():
            p.add_(0.1)  # the average apart from the actor
    obs = np.random.default_rng(3).normal(size=(20, OBS_DIM)).astype(np.float32)
    fake = SimpleNamespace(_module={"default_policy": module})
    rng_state = torch.get_rng_state()
    values = O2OSACTorchLearner.value_estimates(fake, obs)
    assert torch.equal(torch.get_rng_state(), rng_state)
    states = torch.as_tensor(obs)
    with torch.no_grad():
        for name, actor in (("actor", module.actor), ("ema_actor", module.ema_actor)):
            q = module.critic(torch.cat([states, torch.tanh(actor(states)[0])], dim=-1)).squeeze(-1)  # [E, N]
            assert values[name] == pytest.approx(float(q.min(0).values.mean()), rel=1e-6), name
    assert values["actor"] != pytest.approx(values["ema_actor"])
    assert set(O2OSACTorchLearner.value_estimates(SimpleNamespace(_module={"default_policy": build_module()}),
                                                  obs)) == {"actor"}  # no average kept: the actor only


def test_no_diagnostics_offline():
    _, _, _, _, _, metrics = run_one_update("sacml")
    assert "kl_to_reference" not in metrics and "td_error_rms" in metrics


def test_optimizer_states_carry_over_by_position_and_keep_the_learning_rates():
    """The reference code's load_model: online Adam resumes from the offline moments and step count."""
    torch.manual_seed(0)
    offline_module, online_module = build_module(), build_module()
    offline, offline_optim = fake_learner(offline_module, make_config("sacml"))
    for _ in range(3):
        offline.o2o_update(make_batch(1))
    states = O2OSACTorchLearner.get_optimizer_states(offline)
    online, online_optim = fake_learner(online_module, make_config("aca"))
    online_optim["actor"].param_groups[0]["lr"] = 1e-5
    O2OSACTorchLearner.set_optimizer_states(online, states)
    for name in ("critic", "actor", "alpha"):
        got, want = online_optim[name].state_dict(), offline_optim[name].state_dict()
        assert got["state"].keys() == want["state"].keys()
        for index, moments in want["state"].items():
            assert float(got["state"][index]["step"]) == 3.0
            torch.testing.assert_close(got["state"][index]["exp_avg_sq"], moments["exp_avg_sq"])
    assert online_optim["actor"].param_groups[0]["lr"] == 1e-5  # this learner's rate, not the offline one
    states["critic"]["state"][0]["exp_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match="critic optimizer state 0.exp_avg has shape"):
        O2OSACTorchLearner.set_optimizer_states(online, states)


# ---------------------------------------------------------------- IQL and the settling of the last policy


def test_iql_update_by_hand_q_to_r_plus_gamma_v_expectile_v_and_advantage_weighted_actor():
    """IQL's three losses written out: Q_i to r + gamma (1 - d) V(s'), V to the 0.7-expectile of the target
    critics' min, the actor on -E[min(exp(beta s A), 100) log pi(a|s)] with A from V before its step; the
    temperature takes no step."""
    torch.manual_seed(7)
    module = build_module(state_value=True)
    scale, beta = 2.0, 3.0
    config = make_config("iql", iql_advantage_scale=scale, iql_temperature=beta)
    fake, optim = fake_learner(module, config)
    batch = make_batch(1, seed=3)
    b = {k: torch.from_numpy(v[0]) for k, v in batch.items()}
    cw = [w.detach().clone().requires_grad_() for w in module.critic.weights]
    cb = [x.detach().clone().requires_grad_() for x in module.critic.biases]
    tw = [w.detach().clone() for w in module.target_critic.weights]
    tb = [x.detach().clone() for x in module.target_critic.biases]
    vw = [w.detach().clone().requires_grad_() for w in module.state_value.weights]
    vb = [x.detach().clone().requires_grad_() for x in module.state_value.biases]
    actor = copy.deepcopy(module.actor)
    log_alpha = module.log_alpha.detach().clone()

    with torch.no_grad():
        y = b["rewards"] + 0.99 * (1 - b["terminateds"]) * member_forward(vw, vb, b["new_obs"], 0).squeeze(-1)
        target_q = min_q(tw, tb, b["obs"], b["actions"])
    x = torch.cat([b["obs"], b["actions"]], -1)
    q_loss = sum(((member_forward(cw, cb, x, e) - y) ** 2).mean() for e in range(2))
    v = member_forward(vw, vb, b["obs"], 0).squeeze(-1)
    u = target_q - v
    v_loss = (torch.where(u < 0, 0.3, 0.7) * u ** 2).mean()
    grads = torch.autograd.grad(q_loss + v_loss, cw + cb + vw + vb)
    weights = torch.exp(beta * scale * u.detach()).clamp(max=100.0)
    mean, log_std = actor(b["obs"])
    a = b["actions"].clamp(-1 + 1e-6, 1 - 1e-6)
    data_logp = squashed_log_prob_at_u(mean, log_std, torch.atanh(a))
    actor_loss = -(weights * data_logp).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(actor.parameters()))

    metrics = fake.o2o_update(batch)
    assert metrics["critic_loss"] == pytest.approx(float((q_loss + v_loss).detach()), rel=1e-5)
    assert metrics["value_loss"] == pytest.approx(float(v_loss.detach()), rel=1e-5)
    assert metrics["actor_loss"] == pytest.approx(float(actor_loss.detach()), rel=1e-5)
    for got, want in zip(optim["critic"].applied, grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(optim["actor"].applied, actor_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not hasattr(optim["alpha"], "applied")  # no temperature step
    assert torch.equal(module.log_alpha.detach(), log_alpha)


def test_actor_moving_average_is_the_iterates_mean_then_follows_the_actor_at_its_rate():
    """tau_t = max(tau, 1/(t+1)) with tau = 1/4: updates 0, 1, 2 at rates 1, 1/2, 1/3 (the mean of the three
    actors, never the initial weights), updates 3 and 4 at 1/4."""
    torch.manual_seed(8)
    tau = 0.25
    module = build_module(actor_ema=True)
    fake, _ = fake_learner(module, make_config("sacml", actor_ema=tau))
    actors = []
    for t in range(5):
        fake.o2o_update(make_batch(1, seed=4 + t))
        actors.append([p.detach().clone() for p in module.actor.parameters()])
    expected = actors[0]
    for t, rate in ((1, 0.5), (2, 1 / 3), (3, 0.25), (4, 0.25)):
        expected = [(1 - rate) * e + rate * a for e, a in zip(expected, actors[t])]
    for ema, want in zip(module.ema_actor.parameters(), expected):
        assert not ema.requires_grad
        torch.testing.assert_close(ema, want)
    assert not torch.equal(actors[0][0], actors[4][0])


def test_actor_learning_rate_decays_by_cosine_over_the_module_updates():
    """The actor's lr at update t of T is lr (1 + cos(pi t / T)) / 2, counted by the module (so a resumed
    stage continues the schedule); the critic's lr stays."""
    module = build_module()
    fake, optim = fake_learner(module, make_config("sacml", actor_lr_decay_updates=4))
    seen = []
    for _ in range(5):
        fake.o2o_update(make_batch(1, seed=len(seen)))
        seen.append(optim["actor"].param_groups[0]["lr"])
    want = [LR * 0.5 * (1 + math.cos(math.pi * min(t, 4) / 4)) for t in range(5)]
    assert seen == pytest.approx(want)
    assert seen[-1] == 0.0
    assert optim["critic"].param_groups[0]["lr"] == LR


def test_temperature_floor_holds_alpha_where_it_would_fall_below():
    """SAC+ML's entropy stays above the target, so its temperature falls at every step; with
    min_alpha it stops at the floor."""
    floor = INITIAL_ALPHA * 0.999
    free, floored = build_module(), build_module()
    floored.load_state_dict(free.state_dict())
    for module, min_alpha in ((free, 0.0), (floored, floor)):
        fake, _ = fake_learner(module, make_config("sacml", min_alpha=min_alpha))
        for i in range(5):
            fake.o2o_update(make_batch(1, seed=i))
    assert free.log_alpha.exp().item() < floor
    assert floored.log_alpha.exp().item() == pytest.approx(floor)


def test_handover_weights_take_the_moving_average_as_the_actor_and_drop_offline_only_parts():
    weights = {"actor.w": 1, "ema_actor.w": 2, "critic.w": 3, "state_value.w": 4, "log_alpha": 5}
    assert handover_weights(weights) == {"actor.w": 2, "critic.w": 3, "log_alpha": 5}
    assert handover_weights({"actor.w": 1, "critic.w": 3}) == {"actor.w": 1, "critic.w": 3}
