"""Processes by their id: whether one still runs (what tells a dead server's or process's
leftovers, its metrics files, from a live one's), and ending a worker with its parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal the kernel sends this process when the thread that started it ends."""


def alive(pid: int) -> bool:
    """True for a running process, or one this user may not signal (it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_with_parent(signal_number: int = signal.SIGTERM) -> None:
    """Have the kernel send this process ``signal_number`` when its parent ends, even by
    SIGKILL: a worker of ``readmit serve --processes N`` must not go on serving, under the init
    process, a data folder whose supervisor is gone. uvicorn's supervisor starts every worker
    from its main thread, whose end is the process's. Set again, it replaces the signal. Linux
    only; elsewhere nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
        log.warning("this worker will outlive its supervisor: prctl failed (errno %d)", ctypes.get_errno())
