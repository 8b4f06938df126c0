"""The fault suite's own process harness: a run whose Ray never started is started again, nothing else is."""

from __future__ import annotations

import pytest

from tests.faults.pipeline_proc import RAY_START_FAILURE, STARTUP_ATTEMPTS, KillPoint, PipelineProcess

pytestmark = pytest.mark.faults

FLAKY_START = """
import os, sys
marker = sys.argv[1]
attempts = int(open(marker).read()) if os.path.exists(marker) else 0
open(marker, "w").write(str(attempts + 1))
if attempts < int(sys.argv[2]):
    print("Exception: {failure}. This could happen because ...", flush=True)
    sys.exit(1)
print("run /tmp/x: env Pendulum-v1, dataset d", flush=True)
print("online 0/600 env steps: return 1.0", flush=True)
sys.exit(int(sys.argv[3]))
""".format(failure=RAY_START_FAILURE)


def test_a_run_whose_ray_did_not_start_is_started_again(tmp_path):
    proc = PipelineProcess(["-c", FLAKY_START, str(tmp_path / "n"), "1", "0"])
    assert proc.wait_for(r"^online 0/600") is not None
    assert proc.finish() == 0 and proc.attempts == 2
    assert "starting the run again" in proc.output


def test_it_gives_up_after_a_few_attempts(tmp_path):
    proc = PipelineProcess(["-c", FLAKY_START, str(tmp_path / "n"), "99", "0"])
    assert not proc.kill_at(KillPoint(r"^online 0/600", 1, 0.0))
    assert proc.attempts == STARTUP_ATTEMPTS and proc.proc.returncode == 1


def test_a_failure_after_the_pipeline_started_is_not_retried(tmp_path):
    script = FLAKY_START.replace('print("online 0/600', f'print("{RAY_START_FAILURE}")\nprint("online 0/600')
    proc = PipelineProcess(["-c", script, str(tmp_path / "n"), "0", "3"])
    assert proc.finish() == 3 and proc.attempts == 1
