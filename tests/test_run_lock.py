"""One process at a time in a run directory: the local flock, the storage lease, the entry points that take them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.lock import RunLock, RunLockedError
from rllib_o2o.rundir.mirror import Mirror
from rllib_o2o.rundir.names import LEASE_FILE, LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
# A second process: takes the lock of argv[1] (mirrored to argv[2] when given), reports, holds it until killed
# when argv[3] says so.
SECOND_PROCESS = """
import json, sys, time
from rllib_o2o.rundir.lock import RunLock
from rllib_o2o.rundir.mirror import Mirror
path, store, hold = sys.argv[1], sys.argv[2] or None, sys.argv[3] == "hold"
try:
    lock = RunLock(path, None if store is None else Mirror(store, path)).acquire()
except ValueError as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err)}), flush=True)
    sys.exit(3)
print(json.dumps({"locked": True}), flush=True)
if hold:
    time.sleep(600)
lock.release()
"""


def second_process(path: Path, store: str | None = None) -> dict:
    """What another process gets when it tries to lock `path` (and releases at once)."""
    done = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(path), store or "", "release"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def holding_process(path: Path, store: str | None = None) -> subprocess.Popen:
    """Another process that holds the lock of `path` until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", SECOND_PROCESS, str(path), store or "", "hold"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert json.loads(proc.stdout.readline()) == {"locked": True}
    return proc


def lock_file_holder(path: Path) -> dict | None:
    text = (path / LOCK_FILE).read_text()
    return json.loads(text) if text else None


@pytest.fixture
def store(tmp_path):
    return (tmp_path / "store").as_uri()


def stored_lease(store: str, run_name: str = "run") -> dict | None:
    path = Path(store.removeprefix("file://")) / run_name / LEASE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def test_a_second_process_on_the_same_run_dir_is_refused_until_the_first_releases(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert lock_file_holder(run) == lock.holder
        refused = second_process(run)
        assert refused["error"] == "RunLockedError"
        assert str(run) in refused["message"] and f"pid {os.getpid()}" in refused["message"]
        assert "\n" not in refused["message"]
    assert lock_file_holder(run) is None  # released: the file stays, naming nobody
    assert second_process(run) == {"locked": True}


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    run = tmp_path / "run"
    proc = holding_process(run)
    try:
        with pytest.raises(RunLockedError, match=f"pid {proc.pid} on "):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(run) as lock:  # the kernel dropped the dead process's flock
        assert lock_file_holder(run)["pid"] == os.getpid() == lock.holder["pid"]


def test_a_live_storage_lease_refuses_another_node_until_released(tmp_path, store, capsys):
    node_a, node_b = tmp_path / "a" / "run", tmp_path / "b" / "run"  # two local copies of one storage run
    first = RunLock(node_a, Mirror(store, node_a)).acquire()
    try:
        assert stored_lease(store)["token"] == first.holder["token"]
        assert stored_lease(store)["expires"] > time.time()
        refused = second_process(node_b, store)  # a free local directory: only the lease stops it
        assert refused["error"] == "RunLockedError"
        assert f"pid {os.getpid()}" in refused["message"] and "/store/run" in refused["message"]
        assert not (node_b / LOCK_FILE).read_text()  # it let go of its own local lock
    finally:
        first.release()
    assert stored_lease(store) is None  # removed on a normal exit
    assert second_process(node_b, store) == {"locked": True}


@pytest.mark.parametrize("holder", ["lapsed", "dead-here"])
def test_a_lapsed_or_orphaned_storage_lease_is_taken_over(tmp_path, store, holder):
    run = tmp_path / "run"
    remote = Path(store.removeprefix("file://")) / "run"
    remote.mkdir(parents=True)
    if holder == "lapsed":  # a driver on another node that died a while ago
        lease = {"pid": 1, "host": "node-x", "token": "t", "expires": time.time() - 1}
    else:  # a killed process on this host, whose lease has not lapsed yet
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        lease = {"pid": int(dead.stdout), "host": socket.gethostname(), "token": "t", "expires": time.time() + 600}
    (remote / LEASE_FILE).write_text(json.dumps(lease))
    with RunLock(run, Mirror(store, run)) as lock:
        assert stored_lease(store)["token"] == lock.holder["token"]
    assert stored_lease(store) is None


def test_a_live_lease_of_another_node_is_refused(tmp_path, store):
    run = tmp_path / "run"
    remote = Path(store.removeprefix("file://")) / "run"
    remote.mkdir(parents=True)
    lease = {"pid": 4242, "host": "node-x", "token": "t", "expires": time.time() + 600}
    (remote / LEASE_FILE).write_text(json.dumps(lease))
    with pytest.raises(RunLockedError, match="pid 4242 on node-x"):
        RunLock(run, Mirror(store, run)).acquire()
    assert stored_lease(store) == lease  # untouched
    assert not (run / LOCK_FILE).read_text()  # the local lock was given back
    RunLock(run).acquire().release()


def test_the_lease_is_renewed_while_the_run_lives(tmp_path, store):
    run = tmp_path / "run"
    with RunLock(run, Mirror(store, run), lease_seconds=5, renew_seconds=0.05):
        first = stored_lease(store)["expires"]
        deadline = time.time() + 10
        while stored_lease(store)["expires"] == first and time.time() < deadline:
            time.sleep(0.05)
        assert stored_lease(store)["expires"] > first


# ---------------------------------------------------------------- entry points


def test_a_pipeline_on_a_locked_run_dir_is_refused_before_writing(tmp_path, pendulum_dir, no_ray):
    from rllib_o2o.pipeline import PipelineConfig, run_pipeline

    out = tmp_path / "run"
    cfg = PipelineConfig(dataset=str(pendulum_dir), env="Pendulum-v1", out=str(out))
    with RunLock(out):
        with pytest.raises(RunLockedError):
            run_pipeline(cfg)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # no config.json, no stage


def test_tune_from_a_locked_storage_run_is_refused_before_syncing(tmp_path, store, no_ray, capsys):
    from rllib_o2o.cli import main

    run = tmp_path / "run"
    remote = Path(store.removeprefix("file://")) / "run"
    remote.mkdir(parents=True)
    (remote / "config.json").write_text(json.dumps({"env": "Pendulum-v1"}))
    with RunLock(run):
        assert main(["tune", "--from-run", str(run), "--storage-path", store]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(run) in err[0] and f"pid {os.getpid()}" in err[0], err
    assert not (run / "config.json").exists()  # nothing came down from storage


def test_run_dir_lock_covers_its_mirror(tmp_path, store):
    run = RunDir.open(tmp_path / "run", store)
    with run.lock() as lock:
        assert lock.mirror is run.mirror and stored_lease(store)["token"] == lock.holder["token"]


def test_stage_locks_of_one_run_coexist_and_exclude_the_same_stage_and_a_whole_run(tmp_path):
    """A benchmark runs a run directory's stages as separate tasks: each holds its stage exclusively and
    the run's lock shared (flock treats two opens of one file as two holders, in one process too)."""
    run = tmp_path / "run"
    offline, online = RunLock(run, stage="offline").acquire(), RunLock(run, stage="online-rlpd").acquire()
    try:
        with pytest.raises(RunLockedError, match="runs its offline stage"):
            RunLock(run, stage="offline").acquire()
        with pytest.raises(RunLockedError, match="another process runs in this run directory"):
            RunLock(run).acquire()
    finally:
        offline.release()
    with pytest.raises(RunLockedError):  # the online stage's task still holds the run's lock shared
        RunLock(run).acquire()
    online.release()
    with RunLock(run):  # all stage tasks gone: a whole run may start, and refuses stage tasks
        with pytest.raises(RunLockedError, match="a whole run holds this run directory"):
            RunLock(run, stage="offline").acquire()
    with RunLock(run, stage="offline"):  # and everything was given back
        pass


def test_a_stage_task_takes_its_stage_lease_on_storage_not_the_run_lease(tmp_path):
    store = (tmp_path / "store").as_uri()
    run = tmp_path / "run"
    mirror = Mirror(store, run)
    with RunLock(run, mirror, stage="offline") as lock:
        stored = Path(store.removeprefix("file://")) / run.name
        assert (stored / ".offline.lease").exists() and not (stored / LEASE_FILE).exists()
        assert json.loads((stored / ".offline.lease").read_text())["token"] == lock.holder["token"]
        with pytest.raises(RunLockedError, match="storage lease"):
            RunLock(tmp_path / "elsewhere" / "run", Mirror(store, tmp_path / "elsewhere" / "run"),
                    stage="offline").acquire()
    assert not (stored / ".offline.lease").exists()
