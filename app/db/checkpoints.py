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
282 MB. So once a checkpoint finds it past :data:`LOG_PAGES_BEFORE_RESTART`, the next writer of
the process, holding the process's write lock, copies the last pages itself (most are copied
already) before it begins, and its transaction starts the log again. The writer does it, not
the thread: a thread waiting for the write lock could wait through a whole stream of commits,
since a lock is not handed over in turn (a test run grew the log to 2,000 pages that way).
For the same reason a writer does the thread's work itself when the thread has not run for
:data:`COMMITS_AHEAD` commits (a busy machine may leave it no time): the log stays bounded
whatever the scheduler does. SQLite's own checkpoint at commit stays, at a larger log, in case
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


COMMITS_AHEAD = 4
"""Commits a writer may make past the thread's last checkpoint before it copies them itself."""


class Checkpointer:
    """Copies committed pages of ``path``'s log into the database after commits, until closed.
    Every writer of this process calls :meth:`beginning` holding the process's write lock
    (app/db/session.py), and :meth:`committed` after its commit."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._restart_due = threading.Event()
        self._copying = threading.Lock()
        """Held through a checkpoint: two at once, the second would give up at once (busy)."""
        self._commits = 0
        self._commits_copied = 0
        self._committed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def beginning(self, writer: sqlite3.Connection) -> None:
        """``writer`` is about to begin a write transaction: if the log is long, or the thread
        behind, what is committed is copied now, so that this transaction writes from the log's
        beginning."""
        if self._restart_due.is_set() or self._commits - self._commits_copied > COMMITS_AHEAD:
            self._restart_due.clear()
            self._copy(writer)

    def committed(self) -> None:
        """A write transaction committed: its pages are to be copied soon."""
        if self._thread is None:
            with self._starting:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
                    self._thread.start()
        self._commits += 1
        self._committed.set()

    def close(self) -> None:
        """Stop after the checkpoint under way; what is left is copied by SQLite's own."""
        self._closed.set()
        self._committed.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # A passive checkpoint never waits on a busy database; no waiting for anything else.
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
        if self._copy(connection) >= LOG_PAGES_BEFORE_RESTART:
            self._restart_due.set()

    def _copy(self, connection: sqlite3.Connection) -> int:
        """Copies what is committed; returns the log's length in pages."""
        commits = self._commits
        with self._copying:
            _, log_pages, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._commits_copied = max(self._commits_copied, commits)
        return int(log_pages)
