"""RLlib's own CQL checkpoint -> alignment -> ACA online, through the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray

from rllib_o2o.pipeline import PipelineConfig, run_pipeline
from rllib_o2o.policy_import import RLLIB_MODULE_SUBDIR, load_reference_actor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def train_cql(dataset_dir, out_dir):
    from ray.rllib.algorithms.cql import CQLConfig

    config = (
        CQLConfig()
        .environment("Pendulum-v1")
        .offline_data(input_=[str(dataset_dir)], dataset_num_iters_per_learner=2,
                      map_batches_kwargs={"concurrency": 1, "num_cpus": 1},
                      iter_batches_kwargs={"prefetch_batches": 1})
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=64, lr=None)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        algo.train()
        algo.save_to_path(str(out_dir))
    finally:
        algo.stop()
    # The trained policy as RLlib itself restores it from the checkpoint.
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(str(out_dir / RLLIB_MODULE_SUBDIR))
    probe = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with torch.no_grad():
        dist_inputs = module.forward_inference({"obs": torch.from_numpy(probe)})["action_dist_inputs"]
    return probe, dist_inputs.numpy()


def test_cql_checkpoint_aligns_and_fine_tunes(ray_local, tmp_path, pendulum_dir):
    probe, dist_inputs = train_cql(pendulum_dir, tmp_path / "cql")

    ref = load_reference_actor(tmp_path / "cql", 3, 1)
    # RLlib's default policy encoder uses tanh activations
    assert ref.kind.endswith("RLModule") and ref.alpha_off is None and ref.hidden == [256, 256]
    assert ref.activation == "tanh"
    # The converted actor computes exactly CQL's policy outputs (mean, clamped log-std).
    import torch

    from rllib_o2o.networks import TanhGaussianActor

    net = TanhGaussianActor(3, 1, ref.hidden, ref.activation)
    net.load_state_dict({k: torch.tensor(v) for k, v in ref.state.items()}, strict=True)
    mean, log_std = net(torch.from_numpy(probe))
    np.testing.assert_allclose(mean.detach().numpy(), dist_inputs[:, :1], atol=1e-5)
    np.testing.assert_allclose(log_std.detach().numpy(), np.clip(dist_inputs[:, 1:], -20, 2), atol=1e-5)

    cfg = PipelineConfig(dataset=str(pendulum_dir), env="Pendulum-v1", out=str(tmp_path / "run"),
                         offline_checkpoint=str(tmp_path / "cql"), align_steps=200, online_steps=400,
                         eval_every=200, eval_episodes=1, batch_size=64, replay_capacity=10_000,
                         num_env_runners=1, num_envs_per_env_runner=2,
                         ref_min_score=-1230.0, ref_max_score=-150.0)
    results = run_pipeline(cfg)
    assert results["alignment"]["surgery_max_abs_error"] == 0.0
    assert [p["env_steps"] for p in results["online"]["curve"]] == [0, 200, 400]
    assert results["method"] == "aca-td"  # an imported policy: Z fitted by TD
    assert json.loads((tmp_path / "run" / "results-aca-td.json").read_text())["final_score"] == results["final_score"]
    offline_meta = json.loads((tmp_path / "run" / "offline" / "module" / "meta.json").read_text())
    assert offline_meta["algorithm"].startswith("imported:")
