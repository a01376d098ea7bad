"""Whether a process still runs, by its id: what tells a dead server's or process's leftovers
(metrics files) from a live one's."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True for a running process, or one this user may not signal (it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
