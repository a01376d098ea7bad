"""SQLite's write-ahead log is copied back by the checkpointer thread, not inside commits, and
stays bounded under back-to-back writers (app/db/checkpoints.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.db import checkpoints
from app.db.checkpoints import LOG_PAGES_BEFORE_A_COMMIT_CHECKPOINTS
from app.db.session import SQLITE_PAGE_SIZE, make_engine

ROW_BYTES = 6000
"""A row that fills most of an 8 KiB page: rows and pages counted alike."""


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "blobs.db"
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=True)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, value BLOB)"))
    yield engine, path
    engine.dispose()


def _write(engine: Engine, rows: int) -> None:
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO blobs (value) VALUES (:value)"), [{"value": b"x" * ROW_BYTES}] * rows)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after 10 s"
        time.sleep(0.01)


def _checkpointers() -> int:
    return sum(thread.name == "sqlite-checkpointer" for thread in threading.enumerate())


def test_a_commit_leaves_its_checkpoint_to_the_thread(database: tuple[Engine, Path]) -> None:
    engine, path = database
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == LOG_PAGES_BEFORE_A_COMMIT_CHECKPOINTS
    _write(engine, 300)  # under SQLite's default of 1,000 pages: it would have left them in the log
    _wait_for(lambda: path.stat().st_size >= 300 * SQLITE_PAGE_SIZE, "copied into the database file")


def test_the_log_restarts_under_back_to_back_commits(
    database: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, path = database
    monkeypatch.setattr(checkpoints, "LOG_PAGES_BEFORE_RESTART", 100)
    monkeypatch.setattr(checkpoints, "PAUSE_S", 0)  # a checkpointer as fast as these small commits
    for _ in range(40):
        _write(engine, 60)
    log = path.with_name(path.name + "-wal")
    assert log.stat().st_size < 1000 * SQLITE_PAGE_SIZE, "the log kept every page of 2,400 written"
    _wait_for(lambda: path.stat().st_size >= 2400 * SQLITE_PAGE_SIZE, "copied into the database file")


def test_after_a_checkpoint_finds_the_log_long_the_next_writer_starts_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case the test above meets only by chance: a commit lands during the thread's copy, so
    the log is never wholly copied when a writer begins, and only the writer's own copy lets it
    start again. The thread's pass is run here at a chosen moment, on connections of the test."""
    monkeypatch.setattr(checkpoints, "LOG_PAGES_BEFORE_RESTART", 100)
    path = tmp_path / "blobs.db"
    writer, late, thread = (sqlite3.connect(path, isolation_level=None) for _ in range(3))
    writer.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    writer.execute("PRAGMA journal_mode=WAL")
    for connection in (writer, late, thread):
        connection.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, value BLOB)")
    checkpointer = checkpoints.Checkpointer(str(path))

    def write(connection: sqlite3.Connection, rows: int) -> None:
        connection.executemany("INSERT INTO blobs (value) VALUES (?)", [(b"x" * ROW_BYTES,)] * rows)

    write(writer, 150)
    late.execute("BEGIN IMMEDIATE")
    write(late, 10)  # a writer at work while the thread copies
    checkpointer._checkpoint(thread)
    late.execute("COMMIT")
    log = path.with_name(path.name + "-wal")
    before = log.stat().st_size
    checkpointer.beginning(writer)
    write(writer, 10)
    assert log.stat().st_size == before, "the writer appended to the long log instead of starting it again"
    for connection in (writer, late, thread):
        connection.close()


def test_writers_keep_the_log_bounded_when_the_thread_gets_no_time(
    database: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, path = database
    monkeypatch.setattr(checkpoints.Checkpointer, "_run", lambda _self: None)  # a thread that never runs
    for _ in range(40):
        _write(engine, 60)
    log = path.with_name(path.name + "-wal")
    assert log.stat().st_size < 1000 * SQLITE_PAGE_SIZE, "the log kept every page of 2,400 written"
    assert path.stat().st_size >= 2000 * SQLITE_PAGE_SIZE, "the writers copied nothing back"


def test_disposing_of_the_engine_stops_its_checkpointer(tmp_path: Path) -> None:
    before = _checkpointers()
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}", background_checkpoints=True)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    assert _checkpointers() == before + 1
    engine.dispose()
    assert _checkpointers() == before
