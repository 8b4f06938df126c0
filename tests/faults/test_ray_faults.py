"""Ray-side faults: a killed EnvRunner, a crashing learner, a dying alignment worker."""

from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest

from rllib_o2o.rundir.names import CHECKPOINT_DIR
from rllib_o2o.rundir.stage import read_checkpoint
from tests.faults.pipeline_proc import (
    KillPoint,
    PipelineProcess,
    check_results,
    copy_stages,
    env_runner_pids,
    run_command,
    run_to_end,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_killed_env_runner_is_restarted_and_the_run_finishes(tmp_path, fault_dataset, finished_stages):
    """SIGKILL the (only) EnvRunner's process in stage 3: RLlib restarts the actor, O2OSAC picks it up
    mid-iteration (it would otherwise sample from no one forever) and the run completes. The run is
    long (2000 steps) so that on a fast machine the kill still lands iterations before the check."""
    out = tmp_path / "run"
    online_steps = 2000
    copy_stages(finished_stages, out, ("offline", "alignment"))
    args = run_command(fault_dataset, out, write_config(tmp_path), online_steps=online_steps,
                       extra=("--num-env-runners", "1"))
    point = KillPoint.draw(random.Random(6101), rf"^online 200/{online_steps} env steps", (1, 1), 0.5)
    proc = PipelineProcess(args)
    try:
        assert proc.wait_for(point.pattern), proc.output[-3000:]
        time.sleep(point.delay)
        runners = env_runner_pids(proc.proc.pid)
        assert len(runners) == 1, runners
        os.kill(runners[0], signal.SIGKILL)
        assert proc.wait_for(rf"^online 1000/{online_steps} env steps"), proc.output[-4000:]
        restarted = env_runner_pids(proc.proc.pid)
        rc = proc.finish()
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.output[-4000:]
    assert restarted and runners[0] not in restarted, (runners, restarted)
    check_results(out, online_steps)


INJECT_LEARNER_FAULT = """
import sys
from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import O2OSACTorchLearner

original, calls = O2OSACTorchLearner.o2o_update, []


def o2o_update(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == {fail_on}:
        raise RuntimeError("injected learner fault at update call {fail_on}")
    return original(self, *args, **kwargs)


O2OSACTorchLearner.o2o_update = o2o_update
from rllib_o2o.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_learner_crash_is_reported_and_the_last_checkpoint_resumes(tmp_path, fault_dataset, finished_stages):
    """The learner raises in stage 3 (injected by patching its update in the pipeline process): the run
    stops with an error naming the iteration and the checkpoint to resume from, and re-running resumes."""
    out = tmp_path / "run"
    copy_stages(finished_stages, out, ("offline", "alignment"))
    args = run_command(fault_dataset, out, write_config(tmp_path))
    fail_on = 5  # updates start in iteration 2 (after 256 env steps); call 5 falls in iteration 3
    rc, log = run_to_end(["-c", INJECT_LEARNER_FAULT.format(fail_on=fail_on), *args[2:]])
    assert rc != 0, log[-4000:]
    found = re.search(r"ERROR: online stage failed in training iteration (\d+) \(RuntimeError: injected learner "
                      r"fault at update call 5\); the last complete checkpoint is (\S+) \(iteration (\d+)\)\. "
                      r"Re-run the same command to resume from it\.", log)
    assert found, log[-4000:]
    failed, checkpoint, saved = int(found[1]), found[2], int(found[3])
    assert checkpoint == str(out / "online" / CHECKPOINT_DIR) and saved == failed - 1 >= 1
    progress = read_checkpoint(out / "online" / CHECKPOINT_DIR)  # verified against its manifest
    assert progress["iteration"] == saved
    assert not (out / "online" / "DONE.json").exists()

    rc, log = run_to_end(args)
    assert rc == 0, log[-4000:]
    assert f"online stage: resumed at {progress['env_steps']} env steps" in log, log[-4000:]
    assert "is unusable" not in log  # the checkpoint the crash left is complete and loads
    check_results(out)


def test_alignment_task_is_retried_when_its_worker_dies(tmp_path, pendulum_dir):
    """The alignment task's options (align_remote) carry max_retries: a worker that dies mid-task
    (os._exit on the first attempt) is replaced and the task runs again; without retries it fails."""
    import numpy as np
    import ray
    import torch

    from rllib_o2o.algorithms.alignment.task import align_remote
    from rllib_o2o.algorithms.alignment.z_fit import AlignSettings
    from rllib_o2o.networks import TanhGaussianActor

    options = align_remote(num_cpus=1)._default_options
    assert options["max_retries"] >= 1, options

    def dies_on_first_attempt(marker, *args):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies: a system failure, which Ray retries
        from rllib_o2o.algorithms.alignment.z_fit import align

        return align(*args)

    torch.manual_seed(0)
    actor = {k: v.numpy() for k, v in TanhGaussianActor(3, 1, (32, 32)).state_dict().items()}
    settings = AlignSettings(z_steps=50, batch_size=64, curve_every=25)
    owns = not ray.is_initialized()
    if owns:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        marker = tmp_path / "attempted"
        task = ray.remote(**options)(dies_on_first_attempt)
        report = ray.get(task.remote(str(marker), actor, str(pendulum_dir), (32, 32), settings), timeout=300)
        assert marker.exists()  # the first attempt ran and died
        assert report["z_loss_curve"][-1]["step"] == 50 and report["surgery_max_abs_error"] <= 1e-4
        assert np.allclose(report["weights"]["actor.head.weight"], actor["head.weight"])

        no_retry = ray.remote(**{**options, "max_retries": 0})(dies_on_first_attempt)
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            ray.get(no_retry.remote(str(tmp_path / "again"), actor, str(pendulum_dir), (32, 32), settings),
                    timeout=300)
    finally:
        if owns:
            ray.shutdown()
