"""Engines and sessions.

SQLite allows one writer at a time. Its own busy handler makes a blocked writer sleep in growing
steps (1, 2, 5, 10 ... 100 ms), which under concurrent requests wastes most of the time in
sleeps. So writers take turns on a :class:`WriterTurn` instead, handed over at once: the threads
of a process on a lock, the processes writing one file (a serving process and its background
passes' child, app/passes.py; a command run beside the service) on an advisory lock on a file
beside it, which the kernel gives the next waiter as soon as it is released. Each write
transaction begins ``IMMEDIATE`` so that it never fails half-way on a lock upgrade. Read-only
sessions (API key checks) take neither: WAL lets them read beside the writer. PostgreSQL needs
none of this.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic_core import to_json
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import DomainError
from app.db.checkpoints import LOG_PAGES_BEFORE_A_COMMIT_CHECKPOINTS, Checkpointer

Row = TypeVar("Row")

SQLITE_PAGE_SIZE = 8192
"""Pages of a new SQLite database. A 512-d template row is just over 2 kB: a 4 KiB page holds
one and wastes half, an 8 KiB page holds three, so a bulk load writes a third less to the WAL
and the database (51k instead of 39k records/s at 100k). Larger pages cost small transactions
more (about 13k instead of 18k commits/s of a few rows on this machine kind), hence not 16 KiB
(62k records/s, 9k commits/s). A database keeps the page size it was created with."""


def json_text(value: Any) -> str:
    """JSON columns (attributes, audit details) serialised by pydantic's Rust encoder: four times
    json.dumps's speed, which a bulk load pays once per record. Read back, the values are equal;
    the audit chain hashes its own canonical form (app/audit/service.py), never this text."""
    return to_json(value).decode()


def make_engine(url: str, *, read_only: bool = False, background_checkpoints: bool = False) -> Engine:
    """``background_checkpoints``: SQLite's log copied back by a thread of its own, for the
    large commits of offline bulk work (app/db/checkpoints.py); the service keeps SQLite's
    checkpoints at commit."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, json_serializer=json_text)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, json_serializer=json_text)
    if read_only:
        _configure_sqlite(engine, None, None)
        return engine
    file = engine.url.database
    write_lock = WriterTurn(f"{file}-writer.lock" if file and file != ":memory:" else None)
    checkpointer = Checkpointer(file) if background_checkpoints and file and file != ":memory:" else None
    _configure_sqlite(engine, write_lock, checkpointer)
    return engine


class NestedWriteTransaction(RuntimeError):
    """A programming error made loud: a thread holding SQLite's writers' turn asked for it again
    (a writing session opened inside another). The turn is not reentrant, and the thread waited
    for itself while every other writer waited behind it: the service froze."""


class WriterTurn:
    """One SQLite writer at a time: among this process's threads (a lock) and among the
    processes writing the same file (``flock`` on ``path``; None: this process alone, an
    in-memory database). The kernel wakes a process waiting on the file at once, where
    SQLite's busy handler would have it sleep and try again. The file is opened for each turn
    (two system calls more per write transaction) and its closing ends the turn, so that no
    engine, however short-lived, holds a descriptor."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._holder: int | None = None
        self._file: int | None = None

    def acquire(self) -> None:
        if self._holder == threading.get_ident():
            raise NestedWriteTransaction(
                "a write transaction was begun inside another in the same thread: it would wait for itself for ever"
            )
        self._threads.acquire()
        self._holder = threading.get_ident()
        if self.path is None:
            return
        try:
            self._file = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        except BaseException:
            self._close()
            self._holder = None
            self._threads.release()
            raise

    def release(self) -> None:
        self._close()
        self._holder = None
        self._threads.release()

    def _close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _configure_sqlite(engine: Engine, write_lock: WriterTurn | None, checkpointer: Checkpointer | None) -> None:
    """Transactions begin and end on the driver's connection directly: through SQLAlchemy's
    statement execution, a BEGIN costs as much Python as a small query, twice per request.
    The writer's commits leave checkpoints to ``checkpointer`` (app/db/checkpoints.py)."""

    @event.listens_for(engine, "connect")
    def on_connect(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only BEGIN
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # takes effect only in a new database
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if checkpointer is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={LOG_PAGES_BEFORE_A_COMMIT_CHECKPOINTS}")
        cursor.close()

    if write_lock is None:

        @event.listens_for(engine, "begin")
        def on_read_begin(connection: Any) -> None:
            connection.connection.dbapi_connection.execute("BEGIN")

        return

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        write_lock.acquire()
        connection.info["holds_write_lock"] = True
        try:
            driver = connection.connection.dbapi_connection
            if checkpointer is not None:
                checkpointer.beginning(driver)
            driver.execute("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection)
            raise

    def ending(statement: str) -> Callable[[Any], None]:
        # SQLAlchemy fires "commit" and "rollback" before it asks the driver to end the
        # transaction; releasing the lock there would let the next writer's BEGIN IMMEDIATE meet
        # a transaction still committing, and SQLite's busy handler would put it to sleep for
        # milliseconds. So the transaction is ended here, on the driver's connection, and the
        # lock released after; the driver's own commit() then finds nothing left to do.
        def end(connection: Any) -> None:
            if not connection.info.get("holds_write_lock"):
                return
            driver = connection.connection.dbapi_connection
            try:
                if driver.in_transaction:  # SQLite may have rolled back on its own after an error
                    driver.execute(statement)
            finally:
                _release(connection)
            if checkpointer is not None and statement == "COMMIT":
                checkpointer.committed()

        return end

    def _release(connection: Any) -> None:
        if connection.info.pop("holds_write_lock", False):
            write_lock.release()

    event.listen(engine, "commit", ending("COMMIT"))
    event.listen(engine, "rollback", ending("ROLLBACK"))
    if checkpointer is not None:
        event.listen(engine, "engine_disposed", lambda _engine: checkpointer.close())


Sessions = sessionmaker[Session]
"""Where use cases get their database sessions: each use case opens its own transaction."""


def make_session_factory(engine: Engine) -> Sessions:
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: Sessions) -> Engine:
    engine = sessions.kw["bind"]
    assert isinstance(engine, Engine)
    return engine


@contextmanager
def single_read(factory: Sessions) -> Iterator[Connection]:
    """A connection for one read statement, which needs no transaction: on PostgreSQL in
    autocommit, one round trip where a transaction's BEGIN and ROLLBACK make it three (0.25
    against 0.37 ms a read, measured on loopback). What a batch of searches asks before each
    search (app/indexes/follower.py ``catch_up_on``) pays it."""
    with factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            yield session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        else:
            yield session.connection()


@contextmanager
def transaction(factory: Sessions) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def upsert_statement(session: Session, table: type[Any] | Table) -> PostgresqlInsert | SqliteInsert:
    """An INSERT of the session's dialect, which takes ``ON CONFLICT`` clauses: both databases
    have them, under one syntax that SQLAlchemy's generic insert does not carry."""
    if session.connection().dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


def insert(session: Session, row: Row, *, on_conflict: DomainError | None = None) -> Row:
    """Add ``row`` and flush it, so that its id is known to the audit event that records it.
    A unique constraint it breaks raises ``on_conflict`` (a resource that already exists)."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as error:
        if on_conflict is None:
            raise
        raise on_conflict from error
    return row
