"""One process per data folder: the matcher indexes live in the process that serves them, so a
second server, or an offline bulk load, on the same folder would leave one of them stale."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from app.core.errors import Unavailable


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

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
