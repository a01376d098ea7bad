"""SQLite's write-ahead log copied back into the database by a thread of its own.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: the
committing writer copies every page of the log into the database file and syncs both, while
it still holds the write lock. A bulk load of 512-d templates paid that at nearly every
batch, and it was the part of its commit that waits on the file system. Here the writer
only appends; a checkpointer thread, woken by commits, copies what was committed (a PASSIVE
checkpoint: it never blocks a writer or a reader) on its own connection, with the interpreter
lock released, on the other core.

Only offline work (``readmit enrol`` and the other commands run with the service stopped) does
so. In the service, whose identifications commit a few pages each, a checkpoint beside its
writers cost more than one within a commit every thousand pages: at 1M on SQLite, one client's
median rose by 1 ms and 32 clients' throughput fell by a tenth (alternating runs).

A log only starts again from its beginning when a writer finds every page of it copied, which
a checkpoint running beside a stream of writers seldom leaves it: a 200k-record load grew it to
282 MB. So once it passes :data:`LOG_PAGES_BEFORE_RESTART`, the checkpointer takes the
process's write lock for the moment it takes to copy the last pages (most are copied already)
and has the log restarted. SQLite's own checkpoint at commit stays, at a larger log, in case
the thread could not run.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

LOG_PAGES_BEFORE_RESTART = 4000
"""32 MB of 8 KiB pages: the log's size on disk is bounded by about this plus a transaction."""

LOG_PAGES_BEFORE_A_COMMIT_CHECKPOINTS = 4 * LOG_PAGES_BEFORE_RESTART
"""SQLite's ``wal_autocheckpoint`` under a background checkpointer: reached only if the
checkpointer could not keep the log short."""

PAUSE_S = 0.05
"""At most one checkpoint each pause: a log written in a stream of small commits is copied in
a few large steps, not a sync of the database file per commit."""


class Checkpointer:
    """Copies committed pages of ``path``'s log into the database after commits, until closed;
    ``write_lock`` is the one every writer of this process takes (app/db/session.py)."""

    def __init__(self, path: str, write_lock: threading.Lock) -> None:
        self._path = path
        self._write_lock = write_lock
        self._committed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def committed(self) -> None:
        """A write transaction committed: its pages are to be copied soon."""
        if self._thread is None:
            with self._starting:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
                    self._thread.start()
        self._committed.set()

    def close(self) -> None:
        """Stop after the checkpoint under way; what is left is copied by SQLite's own."""
        self._closed.set()
        self._committed.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # No waiting on a busy database: a reader on an older snapshot (an index being loaded)
        # makes the restart give up at once, not hold the writers back; the next one retries.
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            while True:
                self._committed.wait()
                if self._closed.is_set():
                    return
                self._committed.clear()
                try:
                    self._checkpoint(connection)
                except sqlite3.Error as error:  # the next commit tries again; SQLite's own checkpoint meanwhile
                    log.warning("background checkpoint failed: %s", error)
                if self._closed.wait(PAUSE_S):
                    return
        finally:
            connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        _, log_pages, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log_pages >= LOG_PAGES_BEFORE_RESTART:
            with self._write_lock:  # no writer of this process between the copy and the restart
                connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
