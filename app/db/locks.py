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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

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

HUNG_LEADER_S = 15.0
"""A leader's session idle this long has missed fifteen checks: its process is frozen (stopped,
or stuck outside the interpreter) while its connection lives, and the next that tries to lead
ends that session, which frees the lock."""

DEAD_PEER_S = 11
"""How long a leader's connection may go unanswered, either way, before its end gives up on it."""

LEADER_CONNECTION = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": DEAD_PEER_S * 1000,
    "options": f"-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
    f" -c tcp_user_timeout={DEAD_PEER_S * 1000}",
}
"""The leader's connection, on both of its ends (libpq's, then the server's): TCP keepalives and
a bound on unacknowledged data. The server drops the session of a leader whose host vanished
(no FIN, no RST), and frees its lock, about ``DEAD_PEER_S`` after it last heard of it, instead of
after the kernel's default of two hours of silence or fifteen minutes of retransmissions; and a
leader cut off from the server fails its next check as soon, rather than block in it and believe
it still leads."""


class Leadership:
    """Who, among every process and node of one database, runs the work that must run once at
    a time (the background passes, app/passes.py): the holder of the advisory lock ``name``, held
    by a connection of its own. PostgreSQL frees a session's advisory locks when the session
    ends, so a leader that stops or dies hands over to the next that tries, within
    :data:`LEAD_CHECK_S`, and one whose host vanished or was cut off within ``DEAD_PEER_S`` more
    (:data:`LEADER_CONNECTION`). A leader whose process froze with its connection open (stopped,
    stuck) is ended by the next that tries, once it missed :data:`HUNG_LEADER_S` of checks. On
    SQLite one process serves a database (app/core/datalock.py): it always leads.

    A process cut off from the database may believe it leads until its check fails while another
    has taken over; the passes stay correct meanwhile (the sequencer's steps queue on the
    chain's head, the linker's on their rows), they only do some work twice. ``told`` hears
    whether this process leads after each check (a gauge, for operators)."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        told: Callable[[bool], None],
        check_s: float = LEAD_CHECK_S,
        hung_s: float = HUNG_LEADER_S,
    ) -> None:
        self._url, self._key, self._name, self._told, self._check_s = engine.url, lock_key(name), name, told, check_s
        self._hung_s = hung_s
        self._always = engine.dialect.name != "postgresql"
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._failing = False
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def leading(self) -> bool:
        return self._always or self._leading.is_set()

    def start(self) -> None:
        """Try to lead now (the passes' first look then finds it settled), then every
        :data:`LEAD_CHECK_S`."""
        self.check()
        if self._always:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"leadership-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop trying, and hand the lead over if held (the server frees it as the session ends)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # never end the thread that keeps the lead: drop it and try again
                log.exception("leadership check failed", extra={"event": {"lock": self._name}})
                self._drop()
            self._stop.wait(self._check_s)

    def check(self) -> bool:
        """Take the lead if it is free, or make sure it is still held; whether this process leads."""
        if not self._always:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                if self._leading.is_set():
                    self._connection.execute(text("SELECT 1"))
                else:
                    self._try_to_take(self._connection)
                self._connection.commit()
                self._failing = False
            except SQLAlchemyError as error:  # the database is down or out of reach, or ended this session
                reason = {"lock": self._name, "reason": type(error).__name__}
                if self._leading.is_set():
                    log.warning("lost the lead", extra={"event": reason})
                elif not self._failing:
                    log.warning("cannot try to lead: the database does not answer", extra={"event": reason})
                self._failing = True
                self._drop()
        self._told(self.leading())
        return self.leading()

    def _connect(self) -> Connection:
        """The connection this process tries and holds the lead on, kept between tries (a
        connection a second would cost the server a backend's start each time)."""
        if self._engine is None:  # its own, never one of the pool's
            self._engine = create_engine(self._url, poolclass=NullPool, connect_args=LEADER_CONNECTION)
        return self._engine.connect()

    def _try_to_take(self, connection: Connection) -> None:
        if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar():
            self._leading.set()
            log.info("took the lead", extra={"event": {"lock": self._name}})
        else:
            self._end_a_hung_leader(connection)

    def _end_a_hung_leader(self, connection: Connection) -> None:
        """End the leader's session if it has not checked for :data:`HUNG_LEADER_S`: the lock is
        then free at the next try. Its process, if it ever runs again, finds its session gone at
        its next check and stops leading."""
        ended = connection.execute(_END_HUNG_LEADER, {"key": self._key, "hung_s": self._hung_s}).scalars().all()
        if any(ended):
            log.warning(
                "ended the session of a leader that stopped checking",
                extra={"event": {"lock": self._name, "idle_for_s": self._hung_s}},
            )

    def _drop(self) -> None:
        if self._leading.is_set():
            self._told(False)  # at once: a stopping leader's gauge must not add to its successor's
        self._leading.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(SQLAlchemyError):
                connection.close()  # the session ends, and the lock with it


_END_HUNG_LEADER = text(
    "SELECT pg_terminate_backend(activity.pid) FROM pg_locks AS held"
    " JOIN pg_stat_activity AS activity ON activity.pid = held.pid"
    " WHERE held.locktype = 'advisory' AND held.granted AND held.classid = 0 AND held.objid = :key"
    " AND held.objsubid = 1 AND held.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND activity.state = 'idle' AND activity.state_change < now() - make_interval(secs => :hung_s)"
)
"""Every check of a live leader runs a statement, which moves its session's ``state_change``;
a session idle for longer belongs to a leader that no longer checks. Ending a session of the
service's own role needs no privilege beyond it."""
