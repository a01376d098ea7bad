"""Locks that span every process and node of one database.

PostgreSQL advisory locks, held by a connection of their own: for the length of a ``with``
block, the steps that must run once however many processes start together (migrations, sealing
clear data); for as long as a process leads, the work one process at a time must do
(:class:`Leadership`). SQLite has one serving process per database file (see
app/core/datalock.py), so it needs none.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable 32-bit key for ``name`` (advisory locks are keyed by integers)."""
    return zlib.crc32(f"readmit:{name}".encode())


@contextmanager
def database_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the cluster-wide lock ``name`` (waiting for it) until the block ends."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(name)})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)})
            connection.commit()


LEAD_CHECK_S = 1.0
"""How often a process that does not lead tries to, and one that leads checks it still does."""

KEEPALIVE = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2, "tcp_keepalives_count": 3}
"""The leader's connection, as its server sees it: a leader whose host vanished (no FIN, no RST)
is dropped, and its lock freed, about 11 s after it last spoke, instead of after the kernel's
default of two hours."""


class Leadership:
    """Who, among every process and node of one database, runs the work that must run once at
    a time (the background passes, app/passes.py): the holder of the advisory lock ``name``, held
    by a connection of its own. PostgreSQL frees a session's advisory locks when the session
    ends, so a leader that stops, dies or is cut off hands over to the next that tries, within
    :data:`LEAD_CHECK_S` (plus :data:`KEEPALIVE`'s bound when its host vanished). On SQLite one
    process serves a database (app/core/datalock.py): it always leads.

    A process that lost its connection may believe it leads until its next check while another
    has taken over; the passes stay correct meanwhile (the sequencer's steps queue on the
    chain's head, the linker's on their rows), they only do some work twice."""

    def __init__(self, engine: Engine, name: str, check_s: float = LEAD_CHECK_S) -> None:
        self._engine, self._key, self._check_s = engine, lock_key(name), check_s
        self._name = name
        self._always = engine.dialect.name != "postgresql"
        self._connection: Connection | None = None
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def leading(self) -> bool:
        return self._always or self._leading.is_set()

    def start(self) -> None:
        if self._always:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"leadership-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop trying, and hand the lead over at once if held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._drop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self._check_s)

    def check(self) -> bool:
        """Take the lead if it is free, or make sure it is still held; whether this process leads."""
        try:
            if self._connection is None:
                self._take()
            else:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()
        except SQLAlchemyError as error:  # the database is down, or this session was ended
            if self._leading.is_set():
                log.warning("lost the lead", extra={"event": {"lock": self._name, "reason": type(error).__name__}})
            self._drop()
        return self.leading()

    def _take(self) -> None:
        connection = self._engine.connect()
        try:
            for setting, value in KEEPALIVE.items():
                connection.execute(text(f"SET {setting} = {int(value)}"))
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if not taken:
            connection.close()
            return
        self._connection = connection
        self._leading.set()
        log.info("took the lead", extra={"event": {"lock": self._name}})

    def _drop(self) -> None:
        self._leading.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(SQLAlchemyError):
                connection.invalidate()  # the session ends, and the lock with it; not back to the pool
                connection.close()
