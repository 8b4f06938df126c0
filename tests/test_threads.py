"""torch threads sized to each process's CPU allocation: the resolver, the config knob, and (Ray) the
learner, the EnvRunners and the alignment task asked for the thread count they run with.

The test command exports OMP_NUM_THREADS=1, which every Ray worker inherits; the Ray tests therefore
give processes allocations of 2 (or preset the driver to 2 threads) so that a count that merely stayed
at its inherited value fails them.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray
import torch

from rllib_o2o.threads import apply_torch_threads, resolve_torch_threads

HIDDEN = (8, 8)


@pytest.fixture(autouse=True)
def keep_driver_threads():
    """Building an algorithm sets this process's threads; give later tests back what they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dataset():
    from rllib_o2o.data.rollouts import collect_transitions, env_meta

    return collect_transitions("Pendulum-v1", 200, seed=0), env_meta("Pendulum-v1")


@pytest.fixture(scope="module")
def pi0_state():
    from rllib_o2o.networks import TanhGaussianActor

    torch.manual_seed(0)
    return {k: v.numpy().copy() for k, v in TanhGaussianActor(3, 1, HIDDEN).state_dict().items()}


# ---------------------------------------------------------------- the resolver and the knob


def test_auto_is_the_allocation():
    assert resolve_torch_threads("auto", 1) == 1
    assert resolve_torch_threads("auto", 4) == 4


def test_an_int_is_taken_as_is_whatever_the_allocation():
    assert resolve_torch_threads(3, 1) == 3
    assert resolve_torch_threads(1, 8) == 1


def test_a_fractional_or_zero_allocation_gets_at_least_one_thread():
    assert resolve_torch_threads("auto", 0.5) == 1
    assert resolve_torch_threads("auto", 0) == 1  # e.g. a GPU learner: RLlib's "auto" reserves no CPU
    assert resolve_torch_threads("auto", 2.7) == 2  # rounded down, as Ray sets OMP_NUM_THREADS


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, "2", "AUTO", "many", None])
def test_bad_settings_are_a_value_error_naming_them(bad):
    with pytest.raises(ValueError, match="torch_threads must be 'auto' or a positive int"):
        resolve_torch_threads(bad, 1)


@pytest.mark.parametrize("bad", [-1, None, "1"])
def test_a_bad_allocation_is_a_value_error(bad):
    with pytest.raises(ValueError, match="CPU allocation"):
        resolve_torch_threads("auto", bad)


def test_apply_sets_this_process_and_reports_it():
    assert apply_torch_threads(2) == torch.get_num_threads() == 2
    assert apply_torch_threads(1) == torch.get_num_threads() == 1


def test_o2o_config_validates_torch_threads():
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    assert O2OSACConfig().torch_threads == "auto"
    O2OSACConfig().environment("Pendulum-v1").o2o(torch_threads=2).validate()
    with pytest.raises(ValueError, match="torch_threads must be 'auto' or a positive int, got 0"):
        O2OSACConfig().environment("Pendulum-v1").o2o(torch_threads=0).validate()


@pytest.mark.parametrize("settings", [
    {},
    {"num_cpus_for_main_process": 3},
    {"num_cpus_per_learner": 2},
    {"num_cpus_per_learner": 2, "num_cpus_for_main_process": 3},
    {"num_gpus_per_learner": 1},
    {"num_learners": 1},
    {"num_learners": 1, "num_cpus_per_learner": 2},
    {"num_learners": 1, "num_gpus_per_learner": 1},
])
def test_allocations_are_what_rllib_reserves(settings):
    """main_process_cpus / learner_cpus match RLlib's own resource bundles (e.g. a Tune trial's)."""
    from ray.rllib.algorithms.utils import _get_learner_bundles, _get_main_process_bundle

    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    settings = dict(settings)
    config = O2OSACConfig().resources(num_cpus_for_main_process=settings.pop("num_cpus_for_main_process", 1))
    config.learners(**settings)
    assert config.main_process_cpus() == _get_main_process_bundle(config)["CPU"]
    if config.num_learners:
        assert config.learner_cpus() == _get_learner_bundles(config)[0]["CPU"]


def test_pipeline_key_flag_and_stage_configs_carry_torch_threads(tmp_path):
    from rllib_o2o.cli import build_parser
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.presets import get_preset
    from rllib_o2o.stages.offline import offline_config
    from rllib_o2o.stages.online import online_config

    assert PipelineConfig().torch_threads == "auto"
    PipelineConfig.from_dict({"torch_threads": 2}).validate()
    for bad in ({"torch_threads": 1.5}, {"torch_threads": "two"}, {"torch_threads": 0}):
        with pytest.raises(ValueError, match="torch_threads"):
            PipelineConfig.from_dict(bad).validate()
    parser = build_parser()
    assert parser.parse_args(["run", "--torch-threads", "2"]).torch_threads == 2
    assert parser.parse_args(["run", "--torch-threads", "auto"]).torch_threads == "auto"
    assert parser.parse_args(["collect", "--out", "x"]).torch_threads == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--torch-threads", "0"])

    cfg = PipelineConfig(env="Pendulum-v1", torch_threads=2)
    assert offline_config(cfg, tmp_path, meta=None).torch_threads == 2
    assert online_config(cfg, get_preset("medium")).torch_threads == 2


def test_a_run_resumes_with_other_torch_threads_but_not_another_seed():
    from dataclasses import asdict

    from rllib_o2o.context import refuse_other_run
    from rllib_o2o.pipeline import PipelineConfig

    refuse_other_run(asdict(PipelineConfig(torch_threads=2)), PipelineConfig(), "RUN")
    with pytest.raises(ValueError, match="seed differ"):
        refuse_other_run(asdict(PipelineConfig(seed=1)), PipelineConfig(), "RUN")


def test_align_sets_its_threads_in_the_calling_process(pi0_state, tiny_dataset):
    from rllib_o2o.algorithms.alignment.z_fit import AlignSettings, align

    torch.set_num_threads(1)
    report = align(pi0_state, tiny_dataset, HIDDEN, AlignSettings(z_steps=4, batch_size=16, curve_every=2,
                                                                  torch_threads=2))
    assert report["torch_threads"] == torch.get_num_threads() == 2


# ---------------------------------------------------------------- every process, asked through Ray


def tiny_config(num_env_runners: int = 1):
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    return (
        O2OSACConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=num_env_runners, rollout_fragment_length=50)
        .o2o(hidden=HIDDEN, replay_capacity=1_000)
        .training(train_batch_size_per_learner=16)
        .debugging(seed=0)
    )


def learner_threads(algo) -> int:
    """Asked inside the learner: the driver itself (num_learners 0) or the remote learner actor."""
    return algo.call_learner(lambda learner: torch.get_num_threads())


def env_runner_threads(algo) -> list[int]:
    return algo.env_runner_group.foreach_env_runner(lambda runner: torch.get_num_threads(),
                                                    local_env_runner=False)


@pytest.mark.slow
def test_local_learner_and_env_runner_run_with_their_allocations_also_after_a_restart(ray_session):
    torch.set_num_threads(2)  # as torch's default would be on this machine: the build must lower it
    algo = tiny_config().env_runners(num_cpus_per_env_runner=2).build_algo()
    try:
        assert algo.learner_group.is_local
        assert learner_threads(algo) == algo.config.num_cpus_for_main_process == 1
        assert env_runner_threads(algo) == [2]  # its num_cpus_per_env_runner, not the inherited 1

        # A restarted EnvRunner is a fresh process (Ray re-runs its constructor): sized again.
        group = algo.env_runner_group
        (pid,) = group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False) in ([], [pid]):
            assert time.monotonic() < deadline, "the killed EnvRunner was not restarted"
            algo.restore_env_runners(group)  # RLlib's probe: brings back a runner a failed call marked
            time.sleep(1.0)
        assert env_runner_threads(algo) == [2]
    finally:
        algo.stop()


@pytest.mark.slow
def test_torch_threads_setting_is_honoured_in_the_learner_and_the_env_runners(ray_session):
    algo = (tiny_config().o2o(torch_threads=2)
            .evaluation(evaluation_interval=1, evaluation_num_env_runners=1).build_algo())
    try:
        assert learner_threads(algo) == torch.get_num_threads() == 2
        assert env_runner_threads(algo) == [2]  # allocation 1, but the user knows better
        evaluation = algo.eval_env_runner_group.foreach_env_runner(lambda runner: torch.get_num_threads(),
                                                                   local_env_runner=False)
        assert evaluation == [2]
    finally:
        algo.stop()


@pytest.mark.slow
def test_a_remote_learner_runs_with_num_cpus_per_learner(ray_session):
    torch.set_num_threads(2)
    algo = tiny_config(num_env_runners=0).learners(num_learners=1, num_cpus_per_learner=2).build_algo()
    try:
        assert not algo.learner_group.is_local
        assert learner_threads(algo) == 2
        assert torch.get_num_threads() == algo.config.num_cpus_for_main_process == 1  # the driver
    finally:
        algo.stop()


@pytest.mark.slow
@pytest.mark.parametrize("num_cpus", [1, 2])
def test_alignment_task_runs_with_its_num_cpus(ray_session, tiny_dataset, pi0_state, num_cpus):
    from rllib_o2o.algorithms.alignment.task import align_remote
    from rllib_o2o.algorithms.alignment.z_fit import AlignSettings

    settings = AlignSettings(z_steps=4, batch_size=16, curve_every=2, num_cpus=num_cpus)
    task = align_remote(num_cpus=num_cpus)
    report = ray.get(task.remote(pi0_state, ray.put(tiny_dataset), HIDDEN, settings))
    assert report["torch_threads"] == num_cpus
