"""Stage 2: `align()` fits Z with pi0 frozen and returns a loadable, consistent ACA module state."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_o2o import maths
from rllib_o2o.algorithms.alignment import z_fit
from rllib_o2o.algorithms.alignment.task import align_in_task, align_remote
from rllib_o2o.algorithms.alignment.z_fit import AlignSettings, align, z_fit_step
from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import O2OSACTorchRLModule
from rllib_o2o.data.rollouts import collect_transitions, env_meta
from rllib_o2o.data.schema import read_dataset, write_dataset
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor
from rllib_o2o.nonfinite import NonFiniteError

HIDDEN = (32, 32)
OBS_DIM, ACT_DIM = 3, 1  # Pendulum-v1


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    tr = collect_transitions("Pendulum-v1", 600, seed=0)
    return write_dataset(tmp_path_factory.mktemp("align") / "pendulum-random", tr, env_meta("Pendulum-v1"))


@pytest.fixture(scope="module")
def pi0_state():
    torch.manual_seed(11)
    return {k: v.numpy().copy() for k, v in TanhGaussianActor(OBS_DIM, ACT_DIM, HIDDEN).state_dict().items()}


def settings(**kw):
    # gamma 0.9 and lr 3e-3: Z reaches the scale of its TD fixed point within a few hundred steps
    # (with gamma 0.99 the loss first grows while Z's magnitude climbs towards ~r / (1 - gamma)).
    values = dict(z_steps=300, batch_size=64, lr=3e-3, gamma=0.9, curve_every=50, alpha_off=0.2, seed=0)
    values.update(kw)
    return AlignSettings(**values)


@pytest.fixture(scope="module")
def report(dataset_dir, pi0_state):
    return align(pi0_state, str(dataset_dir), HIDDEN, settings())


def pendulum_module():
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    return RLModuleSpec(
        module_class=O2OSACTorchRLModule, observation_space=env.observation_space,
        action_space=env.action_space, model_config={"hidden": list(HIDDEN), "initial_alpha": 0.3},
    ).build()


def test_align_output_is_a_full_module_state(report):
    module = pendulum_module()
    module.make_target_networks()
    weights = report["weights"]
    assert set(weights) == set(module.state_dict())
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()}, strict=True)
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), weights[key], err_msg=key)
    assert report["surgery_max_abs_error"] <= 1e-5
    assert report["settings"]["z_steps"] == 300


def test_align_actor_reference_critic_target_and_temperature(report, pi0_state):
    w = report["weights"]
    for key, value in pi0_state.items():
        np.testing.assert_array_equal(w[f"actor.{key}"], value, err_msg=key)
        np.testing.assert_array_equal(w[f"ref_actor.{key}"], value, err_msg=key)
    critic_keys = [k for k in w if k.startswith("critic.")]
    assert len(critic_keys) == 2 * (len(HIDDEN) + 1)
    for key in critic_keys:
        np.testing.assert_array_equal(w["target_" + key], w[key], err_msg=key)
    assert float(w["log_alpha"]) == 0.0  # alpha = 1
    assert int(w["num_updates"]) == 0
    # R's first layer: Z's observation rows then all-zero action rows, for both members.
    first = w["critic.weights.0"]
    assert first.shape == (2, OBS_DIM + ACT_DIM, HIDDEN[0])
    assert np.all(first[:, OBS_DIM:] == 0)
    assert np.abs(first[:, :OBS_DIM]).max() > 0
    assert not np.array_equal(first[0], first[1])  # two independent baselines


def test_align_rebuilt_critic_ignores_the_action(report):
    module = pendulum_module()
    module.make_target_networks()
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in report["weights"].items()}, strict=True)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(256, OBS_DIM, generator=gen)
    with torch.no_grad():
        q_lo = module.q_values(obs, -torch.ones(256, ACT_DIM))
        q_rand = module.q_values(obs, torch.rand(256, ACT_DIM, generator=gen) * 2 - 1)
    torch.testing.assert_close(q_rand, q_lo, rtol=0, atol=1e-5)
    assert q_lo.std() > 0  # depends on the state


def test_align_rebuilds_an_ensemble_of_as_many_members_as_asked(dataset_dir, pi0_state):
    """num_members Z_i, each its own baseline, become as many R_i that ignore the action."""
    weights = align(pi0_state, str(dataset_dir), HIDDEN, settings(z_steps=20, curve_every=10, num_members=5))["weights"]
    first = weights["critic.weights.0"]
    assert first.shape == (5, OBS_DIM + ACT_DIM, HIDDEN[0])
    assert np.all(first[:, OBS_DIM:] == 0)
    assert len({first[e].tobytes() for e in range(5)}) == 5
    np.testing.assert_array_equal(weights["target_critic.weights.0"], first)


def test_align_loss_curve_decreases(report):
    curve = report["z_loss_curve"]
    assert [p["step"] for p in curve] == [50, 100, 150, 200, 250, 300]
    losses = [p["z_loss"] for p in curve]
    assert all(math.isfinite(x) and x >= 0 for x in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert report["seconds"] > 0 and report["z_steps_per_s"] > 0


def test_align_is_seeded(dataset_dir, pi0_state):
    a = align(pi0_state, str(dataset_dir), HIDDEN, settings(z_steps=40, curve_every=20))
    b = align(pi0_state, str(dataset_dir), HIDDEN, settings(z_steps=40, curve_every=20))
    c = align(pi0_state, str(dataset_dir), HIDDEN, settings(z_steps=40, curve_every=20, seed=1))
    for key in a["weights"]:
        np.testing.assert_array_equal(a["weights"][key], b["weights"][key], err_msg=key)
    assert not np.array_equal(a["weights"]["critic.weights.0"], c["weights"]["critic.weights.0"])


def test_align_rejects_a_broken_surgery(dataset_dir, pi0_state, monkeypatch):
    original = z_fit.critic_from_baseline

    def broken(z, action_dim):
        r = original(z, action_dim)
        with torch.no_grad():
            r.weights[0][:, -action_dim:] += 0.1
        return r

    monkeypatch.setattr(z_fit, "critic_from_baseline", broken)
    with pytest.raises(z_fit.AlignmentError):
        align(pi0_state, str(dataset_dir), HIDDEN, settings(z_steps=5, curve_every=5))


def nan_rewards(dataset_dir):
    """The dataset as a (columns, meta) pair whose rewards are NaN: every Z step's loss is NaN."""
    columns, meta = read_dataset(dataset_dir)
    return {**columns, "rewards": np.full_like(columns["rewards"], np.nan)}, meta


def test_align_stops_on_a_non_finite_z_loss(dataset_dir, pi0_state):
    points = []
    with pytest.raises(NonFiniteError) as err:
        align(pi0_state, nan_rewards(dataset_dir), HIDDEN, settings(z_steps=40, curve_every=20), progress=points.append)
    message = str(err.value)
    assert message.startswith("alignment stage: ") and "z_loss = nan" in message and "Z step 20" in message
    assert points == []  # the diverged point is not reported as progress


def _log_pi(mean, log_std, u):
    return (Normal(mean, log_std.exp()).log_prob(u) - TanhTransform().log_abs_det_jacobian(u, torch.tanh(u))).sum(-1)


def test_z_fit_step_uses_the_spec_target():
    torch.manual_seed(3)
    pi0 = TanhGaussianActor(OBS_DIM, 2, HIDDEN).requires_grad_(False)
    z = EnsembleMLP(2, OBS_DIM, 1, HIDDEN)
    z_before = copy.deepcopy(z)
    pi0_before = copy.deepcopy(pi0.state_dict())
    lr, gamma, alpha_off = 1e-3, 0.9, 0.3
    b = {
        "obs": torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.5, -1.5], [-0.7, 0.0, 2.0]]),
        "actions": torch.tensor([[0.2, -0.5], [0.9, 0.0], [-0.3, 0.7]]),
        "rewards": torch.tensor([1.0, -2.0, 0.5]),
        "new_obs": torch.tensor([[0.2, -0.1, 0.0], [0.8, 0.6, -1.0], [-0.5, 0.2, 1.5]]),
        "terminateds": torch.tensor([0.0, 1.0, 0.0]),
    }

    # By hand: a' ~ pi0(.|s') with the same noise, y_Z = r + g (1 - d) [(1 - alpha_off) log pi0(a'|s') + min_i Z_i(s')]
    torch.manual_seed(42)
    eps = torch.randn(3, 2)
    with torch.no_grad():
        m2, ls2 = pi0(b["new_obs"])
        u2 = m2 + ls2.exp() * eps
        next_log_pi0 = _log_pi(m2, ls2, u2)
        z_next = z(b["new_obs"]).squeeze(-1)
        y = torch.tensor([
            b["rewards"][i] + gamma * (1 - b["terminateds"][i])
            * (next_log_pi0[i] + torch.min(z_next[:, i]) - alpha_off * next_log_pi0[i])
            for i in range(3)
        ])
        assert y[1] == b["rewards"][1]  # terminal: no bootstrap
        m, ls = pi0(b["obs"])
        log_pi0 = _log_pi(m, ls, torch.atanh(b["actions"]))
    # The library's own target on the same inputs agrees with the hand-written one.
    torch.testing.assert_close(
        maths.z_target(b["rewards"], b["terminateds"], gamma, next_log_pi0, z_next.min(0).values, alpha_off),
        y, rtol=1e-6, atol=1e-6)
    zw = [w.detach().clone().requires_grad_() for w in z.weights]
    zb = [x.detach().clone().requires_grad_() for x in z.biases]

    def member(x, e):
        h = x
        for i, (w, bias) in enumerate(zip(zw, zb)):
            h = h @ w[e] + bias[e]
            h = torch.relu(h) if i < len(zw) - 1 else h
        return h.squeeze(-1)

    expected_loss = sum(((log_pi0 + member(b["obs"], e) - y) ** 2).mean() for e in range(2))
    grads = torch.autograd.grad(expected_loss, zw + zb)

    optimizer = torch.optim.Adam(z.parameters(), lr=lr)
    torch.manual_seed(42)
    loss = z_fit_step(pi0, z, optimizer, b, AlignSettings(gamma=gamma, alpha_off=alpha_off))
    assert float(loss) == pytest.approx(float(expected_loss.detach()), rel=1e-5)
    assert not loss.requires_grad
    # Z took Adam's first step on that loss (lr * g / (|g| + eps)); pi0 did not move.
    for p, p0, g in zip(list(z.weights) + list(z.biases), list(z_before.weights) + list(z_before.biases), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - lr * g / (g.abs() + 1e-8), rtol=1e-5, atol=1e-7)
    for key, value in pi0.state_dict().items():
        assert torch.equal(value, pi0_before[key])


@pytest.mark.slow
def test_align_remote_matches_local(ray_session, dataset_dir, pi0_state):
    import ray

    s = settings(z_steps=60, curve_every=20)
    remote = ray.get(align_remote(num_cpus=1).remote(pi0_state, str(dataset_dir), HIDDEN, s), timeout=120)
    local = align(pi0_state, str(dataset_dir), HIDDEN, s)
    assert set(remote["weights"]) == set(local["weights"]) == set(pendulum_module_keys())
    for key in local["weights"]:
        np.testing.assert_allclose(remote["weights"][key], local["weights"][key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    assert [p["step"] for p in remote["z_loss_curve"]] == [20, 40, 60]
    assert remote["surgery_max_abs_error"] <= 1e-5


@pytest.mark.slow
def test_align_in_task_raises_the_non_finite_error_itself(ray_session, dataset_dir, pi0_state):
    points = []
    with pytest.raises(NonFiniteError) as err:
        align_in_task(pi0_state, nan_rewards(dataset_dir), HIDDEN, settings(z_steps=40, curve_every=20), 0,
                      points.append)
    assert "\n" not in str(err.value) and "Z step 20" in str(err.value)  # not the task's traceback
    assert points == []


def pendulum_module_keys():
    module = pendulum_module()
    module.make_target_networks()
    return module.state_dict().keys()


def test_align_stops_when_the_heldout_residual_plateaus(dataset_dir, pi0_state):
    # lr 0: Z never changes, so the held-out residual never improves after the first evaluation
    frozen = align(pi0_state, str(dataset_dir), HIDDEN, settings(lr=0.0, plateau_patience=3, z_steps=1000))
    assert frozen["stopped_at_plateau"] and frozen["z_steps_done"] == 4 * 50
    assert [c["step"] for c in frozen["z_loss_curve"]] == [50, 100, 150, 200]
    residuals = {c["heldout_residual"] for c in frozen["z_loss_curve"]}
    assert len(residuals) == 1  # the same held-out rows and a' noise every time
    learning = align(pi0_state, str(dataset_dir), HIDDEN, settings(plateau_patience=0))
    assert not learning["stopped_at_plateau"] and learning["z_steps_done"] == 300
    curve = learning["z_loss_curve"]
    assert curve[-1]["heldout_residual"] < curve[0]["heldout_residual"]


def test_z_fit_without_log_pi0_fits_z_to_y_z():
    """z_includes_log_pi0=False: L_Z = sum_i E[(Z_i(s) - y_Z)^2] (the critic that fits R alone)."""
    torch.manual_seed(0)
    pi0 = TanhGaussianActor(OBS_DIM, ACT_DIM, HIDDEN).requires_grad_(False)
    z = EnsembleMLP(2, OBS_DIM, 1, HIDDEN)
    b = {"obs": torch.randn(8, OBS_DIM), "actions": torch.rand(8, ACT_DIM) * 2 - 1, "rewards": torch.randn(8),
         "new_obs": torch.randn(8, OBS_DIM), "terminateds": torch.zeros(8)}
    s = settings(z_includes_log_pi0=False)
    torch.manual_seed(5)
    log_pi0, z_values, y = z_fit._z_fit_terms(pi0, z, b, s)
    assert torch.equal(log_pi0, torch.zeros(8))
    torch.manual_seed(5)
    _, next_logp = maths.tanh_gaussian_rsample(*pi0(b["new_obs"]))
    expected_y = b["rewards"] + s.gamma * (z(b["new_obs"]).squeeze(-1).min(0).values + (1 - s.alpha_off) * next_logp)
    torch.testing.assert_close(y, expected_y.detach())
    torch.testing.assert_close(z_values, z(b["obs"]).squeeze(-1))
