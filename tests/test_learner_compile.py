"""RLlib's `torch_compile_learner` knobs on O2OSAC's learner: the compiled update is the eager one.

Learners are built without Ray (`config.build_learner`) and compiled with dynamo's "eager"
backend: the graphs are captured and run as captured, with no C++ compilation, so the random
draws and the arithmetic are those of the eager path and the parameters must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box
from torch._dynamo.utils import counters

from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
from rllib_o2o.algorithms.o2o_sac.updates import ACAUpdate, CQLUpdate, SACMLUpdate, SACUpdate

OBS_SPACE = Box(-10.0, 10.0, (4,), np.float32)
ACT_SPACE = Box(-2.0, 2.0, (2,), np.float32)
NUM_UPDATES, BATCH = 3, 32
UPDATES = {"sac": SACUpdate, "aca": ACAUpdate, "sacml": SACMLUpdate, "cql": CQLUpdate}
# Per update, the switches whose code paths the compiled losses must follow too.
MODE_SETTINGS = {
    "sac": {},
    "aca": dict(actor_grad_clip=0.25, offline_entropy_bonus=0.5, w_schedule=(1.0, 0.002, 0.2)),
    "sacml": {},
    "cql": dict(cql_num_actions=2),
}


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # conftest.py


def make_config(mode: str, compile_backend: str | None = None) -> O2OSACConfig:
    config = (
        O2OSACConfig()
        .environment(observation_space=OBS_SPACE, action_space=ACT_SPACE)
        .o2o(update=UPDATES[mode], hidden=(16, 16), **MODE_SETTINGS[mode])
        .training(train_batch_size_per_learner=BATCH)
        .learners(num_learners=0)
    )
    if compile_backend is not None:
        config = config.framework(torch_compile_learner=True, torch_compile_learner_dynamo_backend=compile_backend)
    return config


def build_learner(mode: str, compile_backend: str | None = None):
    torch.manual_seed(0)
    learner = make_config(mode, compile_backend).build_learner(spaces={"default_policy": (OBS_SPACE, ACT_SPACE)})
    if mode == "aca":  # a pi0 that differs from the actor, so that the reference terms are not trivial
        module = learner.module["default_policy"].unwrapped()
        with torch.no_grad():
            for p in module.ref_actor.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return learner


def make_batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (NUM_UPDATES, BATCH)
    return {
        "obs": rng.normal(size=(*shape, 4)).astype(np.float32),
        "actions": rng.uniform(-0.95, 0.95, size=(*shape, 2)).astype(np.float32),
        "rewards": rng.normal(size=shape).astype(np.float32),
        "new_obs": rng.normal(size=(*shape, 4)).astype(np.float32),
        "terminateds": (rng.random(shape) < 0.25).astype(np.float32),
    }


def train(learner, graphs_per_call: list[int]) -> dict[str, torch.Tensor]:
    """Two `o2o_update` calls of NUM_UPDATES updates, each from the same seed; the module's state after them."""
    for call in range(2):
        torch.manual_seed(100 + call)
        learner.o2o_update(make_batch(call))
        graphs_per_call.append(counters["stats"]["unique_graphs"])
    return {k: v.detach().clone() for k, v in learner.module["default_policy"].unwrapped().state_dict().items()}


@pytest.mark.parametrize("mode", list(MODE_SETTINGS))
def test_compiled_update_gives_the_eager_parameters(mode):
    eager_learner = build_learner(mode)
    assert eager_learner._critic_loss_fn == eager_learner._update.critic_loss  # off: the plain methods
    eager = train(eager_learner, [])

    compiled_learner = build_learner(mode, compile_backend="eager")
    before = counters["stats"]["unique_graphs"]
    graphs = []
    compiled = train(compiled_learner, graphs)
    assert graphs[0] > before  # the losses were captured as graphs...
    assert graphs[1] == graphs[0]  # ... once: a changing w_t or a new batch does not recompile them

    assert eager.keys() == compiled.keys()
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert int(compiled["num_updates"]) == 2 * NUM_UPDATES


def test_compiling_the_complete_update_is_refused():
    config = make_config("sac", compile_backend="eager").framework(
        torch_compile_learner_what_to_compile="complete_update")
    with pytest.raises(ValueError, match="complete_update"):
        config.validate()
