"""Driving `rllib-o2o run` as a subprocess: kill it at a seeded point, resume it, check results.json.

Every pipeline process runs in its own session; killing it SIGKILLs the whole
process group and every descendant found under /proc (its Ray GCS, raylet and
workers), so no test leaves a Ray process behind, and no other Ray on the
machine is touched.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Budgets small enough for a 2-core machine: 4 offline iterations, 3 online ones.
TINY = {"batch_size": 64, "offline_eval_every": 100, "hidden": [32, 32], "replay_capacity": 10_000}
OFFLINE_STEPS, ALIGN_STEPS, ONLINE_STEPS, EVAL_EVERY = 400, 500, 600, 200
TIMEOUT_S = 300


def write_config(directory: Path, **extra) -> Path:
    path = directory / "tiny.json"
    path.write_text(json.dumps({**TINY, **extra}))
    return path


def run_command(dataset: Path, out: Path, config_file: Path, online_steps: int = ONLINE_STEPS,
                extra: tuple = ()) -> list[str]:
    return ["-m", "rllib_o2o.cli", "run", "--dataset", str(dataset), "--env", "Pendulum-v1", "--out", str(out),
            "--offline-steps", str(OFFLINE_STEPS), "--align-steps", str(ALIGN_STEPS),
            "--online-steps", str(online_steps), "--eval-every", str(EVAL_EVERY), "--eval-episodes", "1",
            "--config", str(config_file), "--method", "aca", *extra]  # aca: the stage names asserted on


def child_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # a 2-core machine: torch's default threads only contend
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("RAY_ADDRESS", None)  # always a private local Ray, never someone else's cluster
    return env


def _stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), int(fields[3]))
    return stats


def _parents() -> dict[int, int]:
    return {pid: parent for pid, (parent, _) in _stats().items()}


def session_members(sid: int) -> list[int]:
    """Processes still in session `sid` (each pipeline run is a session: it outlives reparenting)."""
    return sorted(pid for pid, (_, session) in _stats().items() if session == sid)


def descendants(pid: int) -> list[int]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def env_runner_pids(pid: int) -> list[int]:
    """Ray worker processes below `pid` that host an EnvRunner actor (O2OEnvRunner; Ray sets the process title)."""
    return sorted(p for p in descendants(pid) if cmdline(p).startswith("ray::O2OEnvRunner"))


@dataclass
class KillPoint:
    """SIGKILL after the `nth` output line matching `pattern`, `delay` seconds later."""

    pattern: str
    nth: int
    delay: float

    @classmethod
    def draw(cls, rng, pattern: str, nth: tuple[int, int], max_delay: float) -> "KillPoint":
        return cls(pattern, rng.randint(*nth), round(rng.uniform(0.0, max_delay), 3))

    def __str__(self) -> str:
        return f"after line #{self.nth} matching {self.pattern!r} + {self.delay:.3f}s"


RAY_START_FAILURE = "The current node timed out during startup"  # Ray's fixed 30 s, hit on an overloaded host
STARTUP_ATTEMPTS = 3


class PipelineProcess:
    """`python ARGS...` in its own session, its merged stdout/stderr read line by line in a thread.

    A run whose private Ray never came up (RAY_START_FAILURE, before the pipeline printed
    anything of its own) is started again, up to STARTUP_ATTEMPTS times: that is the machine,
    not a fault under test.
    """

    def __init__(self, args: list[str], cwd: Path | None = None):
        self.args, self.cwd = args, cwd
        self.lines: list[str] = []
        self.attempts = 0
        self._killed = False
        self._start()

    def _start(self) -> None:
        self.attempts += 1
        self._first_line = len(self.lines)
        self.proc = subprocess.Popen([sys.executable, *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env=child_env(), cwd=self.cwd)
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc, self._queue), daemon=True)
        self._reader.start()
        self._eof = False

    @staticmethod
    def _read(proc, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _restarted_after_ray_start_failure(self) -> bool:
        """At end of output: if Ray failed to start, starts the run again and returns True."""
        attempt = "".join(self.lines[self._first_line:])
        if self._killed or RAY_START_FAILURE not in attempt or self.attempts >= STARTUP_ATTEMPTS:
            return False
        if re.search(r"^run \S+: env ", attempt, re.MULTILINE):  # the pipeline had started: a real failure
            return False
        self.proc.wait(timeout=60)
        self._kill_session()
        self.lines.append(f"[test harness: Ray did not start (attempt {self.attempts}); starting the run again]\n")
        self._start()
        return True

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def next_line(self, deadline: float) -> str | None:
        """The next output line, or None at end of output (or past `deadline`)."""
        while not self._eof:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                return None
            if line is not None:
                self.lines.append(line)
                return line
            self._eof = True
            if self._restarted_after_ray_start_failure():
                continue
        return None

    def wait_for(self, pattern: str, nth: int = 1, timeout: float = TIMEOUT_S) -> str | None:
        """Reads until the `nth` line matching `pattern` (returned); None if the output ends first."""
        deadline, seen, regex = time.monotonic() + timeout, 0, re.compile(pattern)
        while time.monotonic() < deadline:
            line = self.next_line(deadline)
            if line is None:
                return None
            if regex.search(line):
                seen += 1
                if seen == nth:
                    return line
        return None

    def kill_at(self, point: KillPoint) -> bool:
        """SIGKILLs the pipeline at `point`; False if it finished before reaching it."""
        if self.wait_for(point.pattern, point.nth) is None:
            self.finish()
            return False
        time.sleep(point.delay)
        self.kill()
        return True

    def kill(self) -> None:
        """SIGKILL the run: its process group, every descendant and anything left in its session."""
        self._killed = True
        doomed = descendants(self.proc.pid)
        for action in (lambda: os.killpg(self.proc.pid, signal.SIGKILL),
                       *(lambda p=p: os.kill(p, signal.SIGKILL) for p in doomed)):
            try:
                action()
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=60)
        self._kill_session()
        self._drain(10)

    def _kill_session(self) -> None:
        for pid in session_members(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.next_line(deadline) is not None:
            pass

    def finish(self, timeout: float = TIMEOUT_S) -> int:
        """Waits for the process to exit on its own (killing it past `timeout`); returns its exit code."""
        self._drain(timeout)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()
        self._kill_session()  # nothing of a finished run may linger (its Ray is shut down by then)
        return rc


def run_to_end(args: list[str]) -> tuple[int, str]:
    proc = PipelineProcess(args)
    try:
        rc = proc.finish()
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    return rc, proc.output


def copy_stages(source: Path, out: Path, stages: tuple[str, ...]) -> None:
    """Starts a run directory from another run's finished stages (skips re-training them)."""
    out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        shutil.copytree(source / stage, out / stage)


def newest_checkpoint(stage_dir: Path) -> dict | None:
    """Progress of the checkpoint a resume would use (None: the stage restarts from scratch)."""
    from rllib_o2o.checkpoints import CheckpointError
    from rllib_o2o.rundir.stage import StageDir, read_checkpoint

    for path in StageDir(stage_dir).checkpoints():
        try:
            return read_checkpoint(path)
        except CheckpointError:
            continue
    return None


def stage_files(out: Path) -> dict[str, dict]:
    """What each stage of run `out` has on disk: `done`, its DONE.json (None before it finished), and
    `checkpoint`, the progress a resume would start from (None: none; the alignment keeps none)."""
    from rllib_o2o.rundir.names import DONE_FILE

    return {stage: {"done": json.loads((out / stage / DONE_FILE).read_text())
                    if (out / stage / DONE_FILE).exists() else None,
                    "checkpoint": None if stage == "alignment" else newest_checkpoint(out / stage)}
            for stage in ("offline", "alignment", "online")}


def check_results(out: Path, online_steps: int = ONLINE_STEPS) -> dict:
    """results.json of a finished run: every evaluation exactly once, in order, and a final score."""
    results = json.loads((out / "results.json").read_text())
    online = [p["env_steps"] for p in results["online"]["curve"]]
    assert online == list(range(0, online_steps + 1, EVAL_EVERY)), online
    offline = [p["updates"] for p in results["offline"]["curve"]]
    assert offline == list(range(TINY["offline_eval_every"], OFFLINE_STEPS + 1, TINY["offline_eval_every"])), offline
    assert results["final_score"] is not None
    assert results["final_score"] == results["online"]["curve"][-1]["score"]
    assert results["offline_score"] is not None and results["dip"] is not None
    assert results["alignment"]["z_loss_curve"][-1]["step"] == ALIGN_STEPS
    assert (out / "online" / "DONE.json").exists()
    return results
