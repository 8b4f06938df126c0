"""experiments/pendulum_values.py: its batched Pendulum dynamics are gymnasium's, its statistics are right by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

SPEC = importlib.util.spec_from_file_location(
    "pendulum_values", Path(__file__).resolve().parents[1] / "experiments" / "pendulum_values.py")
pv = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pv)


def test_step_matches_gymnasium_pendulum():
    env = gym.make("Pendulum-v1")
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    theta, theta_dot = env.unwrapped.state
    th, thd = torch.tensor([theta], dtype=torch.float64), torch.tensor([theta_dot], dtype=torch.float64)
    for _ in range(50):
        u = float(rng.uniform(-3, 3))  # beyond the bound too: both clip to [-2, 2]
        _, reward, *_ = env.step(np.array([u], np.float32))
        th, thd, r = pv.pendulum_step(th, thd, torch.tensor([u], dtype=torch.float64))
        assert float(r[0]) == pytest.approx(reward, abs=1e-5)
        assert float(th[0]) == pytest.approx(env.unwrapped.state[0], abs=1e-5)
        assert float(thd[0]) == pytest.approx(env.unwrapped.state[1], abs=1e-5)
    env.close()


def test_step_by_hand():
    # theta = pi/2, theta_dot = 1, u = 1: accel = 15 sin(pi/2) + 3 = 18, theta_dot' = 1 + 0.9 = 1.9,
    # theta' = pi/2 + 0.095; reward = -((pi/2)^2 + 0.1 + 0.001)
    th, thd, r = pv.pendulum_step(torch.tensor([math.pi / 2]), torch.tensor([1.0]), torch.tensor([1.0]))
    assert float(thd[0]) == pytest.approx(1.9, abs=1e-6)
    assert float(th[0]) == pytest.approx(math.pi / 2 + 0.095, abs=1e-6)
    assert float(r[0]) == pytest.approx(-((math.pi / 2) ** 2 + 0.101), abs=1e-5)
    # the speed clips at 8
    _, thd, _ = pv.pendulum_step(torch.tensor([math.pi / 2]), torch.tensor([7.9]), torch.tensor([2.0]))
    assert float(thd[0]) == 8.0


def test_profile_statistics_by_hand():
    a = torch.tensor([[0.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    assert pv.profile_correlation(a, 2 * a + 5) == pytest.approx(1.0, abs=1e-6)
    assert pv.profile_correlation(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert pv.spread(a) == pytest.approx(2.0)  # (2 - 0 + 3 - 1) / 2
