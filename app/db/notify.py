"""PostgreSQL ``LISTEN/NOTIFY``: how a process learns at once that another committed a change.

A notification sent in a transaction is delivered at its commit, and not at all if it rolls
back, so a listener woken by one finds the change committed. It only wakes the listener up: what
changed is read from the database, and polling covers a notification lost while the listening
connection was down. SQLite has no such thing; there the listener is absent and followers poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

GALLERY_CHANGES = "readmit_gallery_changes"
"""The channel of committed gallery changes; the payload is ``<gallery id>:<change_seq>``."""


def notify(session: Session, channel: str, payload: str = "") -> None:
    """Send ``payload`` on ``channel`` when ``session``'s transaction commits (PostgreSQL only)."""
    if session.connection().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(channel, payload)))


class Listener:
    """A connection of its own that LISTENs on one channel, for one thread to wait on. It
    reconnects on the next wait after losing the server; until then waits only time out. The
    first wait on a connection answers True at once: what was committed before its LISTEN (at
    the start, or while the server was lost) was told to nobody here."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._connection: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()

    @staticmethod
    def for_engine(engine: Engine, channel: str) -> Listener | None:
        """A listener on PostgreSQL; None on a database without notifications."""
        return Listener(engine, channel) if engine.dialect.name == "postgresql" else None

    def wait(self, timeout_s: float) -> bool:
        """Block until a notification arrives (True, all those pending consumed) or ``timeout_s``
        passes (False)."""
        import psycopg

        try:
            if self._connection is None:
                self._connect()
                return True
            connection = self._connection
            woken = False
            for _ in connection.notifies(timeout=timeout_s, stop_after=1):
                woken = True
            if woken:  # drain what else is pending: one pass will read every change
                for _ in connection.notifies(timeout=0):
                    pass
            return woken
        except psycopg.Error as error:
            if self._closed.is_set():  # closed under the wait, by a stop: nothing interrupted
                return False
            log.warning("change notifications interrupted; polling", extra={"event": {"reason": str(error)}})
            self._drop()
            self._closed.wait(timeout_s)
            return False

    def close(self) -> None:
        self._closed.set()
        self._drop()

    def _connect(self) -> None:
        """A driver connection of its own (not from the pool, which it would hold for ever),
        made as the engine makes its own, in autocommit: notifications arrive between
        transactions."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        connection = self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
        connection.autocommit = True
        connection.execute(f"LISTEN {self.channel}")
        self._connection = connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class Notified:
    """A thread that calls ``told()`` each time ``channel`` is notified, until stopped: what
    keeps this process's caches in step with the commits of the others (PostgreSQL; absent on
    SQLite, whose one serving process sees its own commits)."""

    WAIT_S = 5.0
    """How long one wait lasts before the thread looks whether it was stopped."""

    def __init__(self, engine: Engine, channel: str, told: Callable[[], None]) -> None:
        self.listener = Listener(engine, channel)
        self.told = told
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"notified-{channel}", daemon=True)

    @staticmethod
    def for_engine(engine: Engine, channel: str, told: Callable[[], None]) -> Notified | None:
        return Notified(engine, channel, told) if engine.dialect.name == "postgresql" else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=self.WAIT_S + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.listener.wait(self.WAIT_S):
                self.told()
