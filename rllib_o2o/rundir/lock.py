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
from rllib_o2o.rundir.names import LEASE_FILE, LOCK_FILE

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


class RunLock:
    """Exclusive use of `run_dir` (and of `mirror`'s storage run, when given) by this process.

    A context manager: `with RunLock(path, mirror): ...`; `acquire()`/`release()` otherwise.
    """

    def __init__(self, run_dir: str | Path, mirror: Mirror | None = None, *,
                 lease_seconds: float = LEASE_SECONDS, renew_seconds: float = LEASE_RENEW_SECONDS):
        self.run_dir = Path(run_dir)
        self.mirror = mirror
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _utc(time.time()),
                       "token": secrets.token_hex(8)}
        self._fd: int | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

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
                lease = self.mirror.read_json(LEASE_FILE)
                if isinstance(lease, dict) and lease.get("token") == self.holder["token"]:
                    self.mirror.delete(LEASE_FILE)
            except StorageError as err:
                print(f"WARNING: storage: could not remove the run's lease ({err}); it lapses by itself "
                      f"{self.lease_seconds:.0f} s after its last renewal", file=sys.stderr, flush=True)
        self._unlock_locally()

    # -- the local lock ------------------------------------------------------------------

    def _lock_locally(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.read(fd, 1 << 16) or b"null")
            except ValueError:  # being written by the holder right now
                holder = None
            os.close(fd)
            raise RunLockedError(f"{self.run_dir} is in use by {_holder_text(holder)}: another process runs in "
                                 "this run directory; wait for it to end, or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.holder).encode())
        self._fd = fd

    def _unlock_locally(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty lock file: nobody holds it
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    # -- the storage lease -----------------------------------------------------------------

    def _lease(self) -> dict:
        expires = time.time() + self.lease_seconds
        return {**self.holder, "expires": expires, "expires_utc": _utc(expires)}

    def _take_lease(self) -> None:
        lease = self.mirror.read_json(LEASE_FILE)
        if isinstance(lease, dict) and lease.get("token") != self.holder["token"]:
            expires = float(lease.get("expires", 0))
            if expires > time.time() and not _is_dead_here(lease):
                raise RunLockedError(
                    f"{self.mirror.uri} is in use by {_holder_text(lease)}: its storage lease runs until "
                    f"{_utc(expires)} and is renewed while that run lives (one that died lapses "
                    f"{self.lease_seconds:.0f} s after its last renewal); wait for it to end, or use another --out")
            print(f"storage: took over the lease of {_holder_text(lease)} on {self.mirror.uri} "
                  f"({'lapsed' if expires <= time.time() else 'its process is gone'})", flush=True)
        self.mirror.write_json(LEASE_FILE, self._lease())
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                lease = self.mirror.read_json(LEASE_FILE)
                if isinstance(lease, dict) and lease.get("token") != self.holder["token"]:
                    print(f"WARNING: storage: {_holder_text(lease)} took over this run's lease on "
                          f"{self.mirror.uri} (it had lapsed); this run no longer holds it", file=sys.stderr,
                          flush=True)
                    return
                self.mirror.write_json(LEASE_FILE, self._lease())
            except StorageError as err:  # transient: the next renewal tries again
                print(f"WARNING: storage: could not renew the run's lease ({err})", file=sys.stderr, flush=True)
