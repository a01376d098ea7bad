"""One batch matched at a time on a node, whichever of its service processes holds it.

Within a process, the scheduler already matches one batch at a time: an exact or shortlisted
search reads the whole index whatever the batch's size, so the searches that queue while one
batch is matched leave together in the next, and throughput grows with the load. Several
processes on a node (``readmit serve --processes N``) each had their own turn: at 200k exact on
PostgreSQL, a second process halved every batch and doubled the scans, and two processes
answered 0.75-0.83 times what one did. A file lock in the data folder gives the node one turn
to share; the kernel hands it back if its holder dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class NodeTurn:
    """The node's matching turn: :meth:`take` blocks until no other process of the node
    matches. One thread of a process may hold it at a time (the scheduler's own slot sees to
    that): a lock taken on one open file is not exclusive between that file's threads."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # the interpreter lock is released while it waits

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
