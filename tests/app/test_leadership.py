"""One process of a database leads the background passes (app/db/locks.py ``Leadership``), and
the lead passes to another when the leader stops or loses its database session."""

import logging
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from app.db.locks import Leadership, lock_key
from tests.app.conftest import postgres_database
from tests.conftest import POSTGRES_URL

NAME = "background-passes"


@pytest.fixture
def engines() -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one fresh PostgreSQL database, as two processes or nodes have."""
    if not POSTGRES_URL:
        pytest.skip("leadership among processes: PostgreSQL (SQLite has one serving process)")
    with postgres_database() as url:
        first, second = create_engine(url), create_engine(url)
        try:
            yield first, second
        finally:
            first.dispose()
            second.dispose()


def leads_within(leadership: Leadership, seconds: float = 5) -> bool:
    """The server frees a lock as the session that held it ends, a moment after its client left."""
    deadline = time.monotonic() + seconds
    while not leadership.check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_process_leads_and_the_next_takes_over_once_it_stops(engines):
    told: list[bool] = []
    first, second = Leadership(engines[0], NAME, lambda _: None), Leadership(engines[1], NAME, told.append)
    assert first.check() and first.leading()
    assert not second.check() and not second.leading()
    assert first.check(), "a leader stays one while its session lives"
    first.stop()
    assert not first.leading()
    assert leads_within(second), "the lead is free once its holder stopped"
    assert told == [False, True], "the process hears whether it leads"
    second.stop()


def test_a_leader_whose_session_ends_loses_the_lead_to_the_next(engines, caplog):
    first, second = (Leadership(engine, NAME, lambda _: None) for engine in engines)
    assert first.check()
    with engines[1].connect() as connection:  # as a database restart or a cut connection would
        ended = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"key": lock_key(NAME)},
        ).all()
    assert ended == [(True,)]
    with caplog.at_level(logging.WARNING, logger="app.db.locks"):
        assert not first.check(), "its session gone, a leader knows it no longer leads"
    assert "lost the lead" in caplog.text
    assert leads_within(second)
    assert not first.check(), "and takes it back only once it is free again"
    second.stop()
    assert leads_within(first)
    first.stop()


def test_the_only_process_of_a_sqlite_database_always_leads(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'one.db'}")
    told: list[bool] = []
    leadership = Leadership(engine, NAME, told.append)
    leadership.start()
    assert leadership.leading() and told == [True]
    leadership.stop()
    engine.dispose()


def test_a_leader_that_stops_checking_is_ended_and_the_next_takes_over(engines, caplog):
    """A leader frozen with its connection open (SIGSTOP, a stuck call) would hold the lock for
    ever: the next that tries ends its session once it missed the checks of ``hung_s``."""
    first = Leadership(engines[0], NAME, lambda _: None)
    second = Leadership(engines[1], NAME, lambda _: None, hung_s=0.5)
    assert first.check()
    assert not second.check(), "a leader that checks is left to lead"
    time.sleep(1.0)  # the first checks no more
    with caplog.at_level(logging.WARNING, logger="app.db.locks"):
        assert leads_within(second)
    assert "ended the session of a leader that stopped checking" in caplog.text
    assert not first.check(), "running again, the frozen leader finds its session gone"
    second.stop()
    first.stop()
