"""One process at a time in a run directory, and in its copy on storage.

Two processes writing one run directory (the same `--out` twice, or the same
storage run from two nodes) would interleave checkpoints and uploads. A run takes
`RunLock` when it starts (`rllib-o2o run`, `rllib-o2o tune`) and a second one is
refused with RunLockedError naming the directory and the holder (pid, host).

* Locally: `fcntl.flock` on RUN_DIR/.run.lock, which names the holder. The kernel
  drops the lock when the process ends, however it ends, so a crashed run never
  leaves it behind. (On NFS Linux maps flock to POSIX locks, which the server keeps.)
* On storage (a run with `--storage-path`): a lease file STORAGE/<run>/.run.lease
  (holder, expiry), written when the run starts, renewed every LEASE_RENEW_SECONDS
  by a daemon thread while the run lives and removed when it ends. A lease that
  has expired (its holder died without removing it: a crashed driver on another
  node) is taken over, as is one whose holder is a dead process on this host. The
  expiry is read against this node's clock: nodes' clocks must agree to well
  within LEASE_SECONDS. Storage has no atomic compare-and-swap, so two runs
  starting within the same second can both take it; the lease guards against the
  usual mistake (a second job on a run that is alive), not against every race.

A process that runs one stage of a run only (a task of `rllib-o2o bench`, which runs a run
directory's stages as separate Ray tasks, side by side) takes `RunLock(run_dir, stage=name)`:
the run's lock shared (other stage tasks may hold it too; a whole run is refused while any
does, and refuses them) and the stage's own lock, RUN_DIR/.<stage>.lock, exclusively; on
storage the stage's lease, STORAGE/<run>/.<stage>.lease.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from rllib_o2o.rundir.mirror import Mirror, StorageError
from rllib_o2o.rundir.names import LEASE_FILE, LOCK_FILE, stage_lease_file, stage_lock_file

LEASE_SECONDS = 120.0  # a storage lease not renewed for this long is free
LEASE_RENEW_SECONDS = 30.0  # how often a live run renews it: three renewals may fail before it lapses


class RunLockedError(ValueError):
    """The run directory (or its storage copy) is in use by another live process."""


def _holder_text(holder: dict | None) -> str:
    if not isinstance(holder, dict) or "pid" not in holder:
        return "another process (holder unknown)"
    return f"pid {holder['pid']} on {holder.get('host', '?')} (since {holder.get('started', '?')})"


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _is_dead_here(holder: dict) -> bool:
    """Whether `holder` is a process on this host that no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _unlock_fd(fd: int, truncate: bool) -> None:
    if truncate:
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class RunLock:
    """Exclusive use of `run_dir` (and of `mirror`'s storage run, when given) by this process, or with
    `stage`, exclusive use of that stage of it (the run's lock shared with other stages' holders).

    A context manager: `with RunLock(path, mirror): ...`; `acquire()`/`release()` otherwise.
    """

    def __init__(self, run_dir: str | Path, mirror: Mirror | None = None, *, stage: str | None = None,
                 lease_seconds: float = LEASE_SECONDS, renew_seconds: float = LEASE_RENEW_SECONDS):
        self.run_dir = Path(run_dir)
        self.mirror = mirror
        self.stage = stage
        self.lease_file = LEASE_FILE if stage is None else stage_lease_file(stage)
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _utc(time.time()),
                       "token": secrets.token_hex(8)}
        self._fd: int | None = None  # the lock this process holds exclusively (the run's, or the stage's)
        self._run_fd: int | None = None  # a stage task's shared hold on the run's lock
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

    @property
    def stage_path(self) -> Path | None:
        return None if self.stage is None else self.run_dir / stage_lock_file(self.stage)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Takes the local lock, then the storage lease; raises RunLockedError if either is held."""
        self._lock_locally()
        if self.mirror is not None:
            try:
                self._take_lease()
            except BaseException:
                self._unlock_locally()
                raise
        return self

    def release(self) -> None:
        """Stops renewing and removes the storage lease (if still ours), then frees the local lock."""
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join(timeout=30)
            self._renewer = None
            try:
                lease = self.mirror.read_json(self.lease_file)
                if isinstance(lease, dict) and lease.get("token") == self.holder["token"]:
                    self.mirror.delete(self.lease_file)
            except StorageError as err:
                print(f"WARNING: storage: could not remove the run's lease ({err}); it lapses by itself "
                      f"{self.lease_seconds:.0f} s after its last renewal", file=sys.stderr, flush=True)
        self._unlock_locally()

    # -- the local lock ------------------------------------------------------------------

    def _lock_locally(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.stage is None:
            self._fd = self._flock(self.path, fcntl.LOCK_EX, "another process runs in this run directory")
            return
        # a stage task: the run's lock shared (a whole run holds it exclusively), then the stage's own
        run_fd = self._flock(self.path, fcntl.LOCK_SH, "a whole run holds this run directory", write_holder=False)
        try:
            self._fd = self._flock(self.stage_path, fcntl.LOCK_EX, f"another process runs its {self.stage} stage")
        except BaseException:
            _unlock_fd(run_fd, truncate=False)
            raise
        self._run_fd = run_fd

    def _flock(self, path: Path, mode: int, why: str, write_holder: bool = True) -> int:
        """`path` flock'ed in `mode` without waiting (its fd), naming this holder in it; RunLockedError if taken."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.read(fd, 1 << 16) or b"null")
            except ValueError:  # being written by the holder right now
                holder = None
            os.close(fd)
            raise RunLockedError(f"{self.run_dir} is in use by {_holder_text(holder)}: {why}; wait for it to "
                                 "end, or use another --out") from None
        if write_holder:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.holder).encode())
        return fd

    def _unlock_locally(self) -> None:
        if self._fd is None:
            return
        _unlock_fd(self._fd, truncate=True)  # an empty lock file: nobody holds it
        self._fd = None
        if self._run_fd is not None:
            _unlock_fd(self._run_fd, truncate=False)  # other stage tasks may hold it still
            self._run_fd = None

    # -- the storage lease -----------------------------------------------------------------

    def _lease(self) -> dict:
        expires = time.time() + self.lease_seconds
        return {**self.holder, "expires": expires, "expires_utc": _utc(expires)}

    def _take_lease(self) -> None:
        lease = self.mirror.read_json(self.lease_file)
        if isinstance(lease, dict) and lease.get("token") != self.holder["token"]:
            expires = float(lease.get("expires", 0))
            if expires > time.time() and not _is_dead_here(lease):
                raise RunLockedError(
                    f"{self.mirror.uri} is in use by {_holder_text(lease)}: its storage lease runs until "
                    f"{_utc(expires)} and is renewed while that run lives (one that died lapses "
                    f"{self.lease_seconds:.0f} s after its last renewal); wait for it to end, or use another --out")
            print(f"storage: took over the lease of {_holder_text(lease)} on {self.mirror.uri} "
                  f"({'lapsed' if expires <= time.time() else 'its process is gone'})", flush=True)
        self.mirror.write_json(self.lease_file, self._lease())
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                lease = self.mirror.read_json(self.lease_file)
                if isinstance(lease, dict) and lease.get("token") != self.holder["token"]:
                    print(f"WARNING: storage: {_holder_text(lease)} took over this run's lease on "
                          f"{self.mirror.uri} (it had lapsed); this run no longer holds it", file=sys.stderr,
                          flush=True)
                    return
                self.mirror.write_json(self.lease_file, self._lease())
            except StorageError as err:  # transient: the next renewal tries again
                print(f"WARNING: storage: could not renew the run's lease ({err})", file=sys.stderr, flush=True)
