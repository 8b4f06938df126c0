"""Shared fixtures: a small valid Pendulum dataset, in memory and on disk; a guard against starting Ray;
a Ray session for a module's tests; one torch thread for a module of tiny networks."""

from __future__ import annotations

import pytest

from rllib_o2o.data.rollouts import collect_transitions, env_meta
from rllib_o2o.data.schema import write_dataset


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny networks: a second intra-op thread only adds contention on a 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pendulum_data():
    """450 random Pendulum-v1 steps: two full 200-step episodes and a cut-off third."""
    tr = collect_transitions("Pendulum-v1", 450, seed=0)
    return tr, env_meta("Pendulum-v1", source="generated")


@pytest.fixture
def pendulum_dir(tmp_path, pendulum_data):
    return write_dataset(tmp_path / "pendulum", *pendulum_data, rows_per_file=200)


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if anything tries to start Ray: these errors must come before any training."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", refuse)
    yield ray
    assert not ray.is_initialized()


def ray_started(num_cpus: int = 2):
    """Yields Ray, started here with `num_cpus` CPUs and shut down after, or the session another module
    left running (reused as it is): the body of a `ray_session` fixture of any scope."""
    import ray

    owns = not ray.is_initialized()  # reuse a session another module left running
    if owns:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    yield ray
    if owns:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_session():
    """Ray (2 CPUs) for the tests of a module that ask for it, shut down after the module."""
    yield from ray_started()


def leftovers(parent) -> list[str]:
    """Hidden temp dirs a failed write could leave beside its output."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """Code under test may start Ray implicitly (build_algo); never let it leak into the next module."""
    yield
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
