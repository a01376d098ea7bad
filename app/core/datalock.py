"""One server per data folder: the matcher indexes and their snapshots live in the processes
that serve them, so a second server, or an offline bulk load, on the same folder would leave one
of them stale.

``readmit serve --processes N`` is still one server: its supervisor process holds the folder's
lock for as long as it runs and names itself to the workers it starts (``READMIT_SUPERVISOR_PID``);
a worker checks that its parent is that holder instead of taking the lock itself.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path
from typing import IO

from app.core.errors import Unavailable
from app.core.processes import end_with_parent

SUPERVISOR_ENV = "READMIT_SUPERVISOR_PID"


class DataDirLocked(Unavailable):
    code = "data_dir_locked"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "readmit.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirLocked(f"another readmit process is using the data folder {self.path.parent}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def held_by(self, pid: int) -> bool:
        """Whether process ``pid`` holds the lock now (it wrote its pid and the lock is taken)."""
        try:
            with open(self.path) as handle:
                if handle.read().strip() != str(pid):
                    return False
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
                return False
        except FileNotFoundError:
            return False

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_for_serving(data_dir: Path) -> DataDirLock:
    """The lock a serving process must hold, acquired: its own, or none to take for a worker of
    a supervisor that holds it (checked, so that a worker started by hand with the variable set
    does not serve a folder nobody guards; a worker whose supervisor dies later is stopped then,
    :func:`app.core.processes.end_with_parent`)."""
    lock = DataDirLock(data_dir)
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None:
        lock.acquire()
        return lock
    # Set before the check below, which then also catches a supervisor gone already. SIGKILL while
    # it starts (uvicorn would finish loading every index before it heeded a SIGTERM, holding
    # the port): nothing is served yet. The start switches to a graceful SIGTERM once done.
    end_with_parent(signal.SIGKILL)
    if not (supervisor == str(os.getppid()) and lock.held_by(int(supervisor))):
        raise DataDirLocked(f"this worker's supervisor (pid {supervisor}) does not hold the data folder {data_dir}")
    return lock


def supervised() -> bool:
    """Whether this process is one of the workers of ``readmit serve --processes N``."""
    return SUPERVISOR_ENV in os.environ
