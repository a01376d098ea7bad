import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from matcher.synthetic import SyntheticSet, make_synthetic_set
from tests.conftest import POSTGRES_URL
from tests.harness import Service

BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the default SQLite file in the data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh database on the test PostgreSQL server, dropped afterwards."""
    assert POSTGRES_URL
    server = make_url(POSTGRES_URL)
    name = f"readmit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin, name)
        admin.dispose()


def drop_database(admin: Engine, name: str) -> None:
    """Drop a test database, its connections ended. An autovacuum worker may be in it just then:
    PostgreSQL lets no ordinary role end one (InsufficientPrivilege), so wait for it and retry."""
    for attempt in range(20):
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except ProgrammingError:
            if attempt == 19:
                raise
            time.sleep(0.5)


@pytest.fixture
def service(tmp_path, database_url) -> Iterator[Service]:
    running = Service(tmp_path / "data", database_url)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def nodes(tmp_path, database_url) -> Iterator[tuple[Service, Service]]:
    """Node A and node B on one database (SQLite: one file both open), B signing the audit log
    with A's key as every node of one log does."""
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    a = Service(tmp_path / "a", url)
    b = Service(tmp_path / "b", url, audit_key_file=a.settings.audit_key_path, change_poll_s=0.1)
    try:
        yield a, b
    finally:
        b.close()
        a.close()


@pytest.fixture(scope="session")
def people() -> SyntheticSet:
    """300 enrolled people (two 512-d samples each), 20 mated and 20 non-mated probes."""
    return make_synthetic_set(300, samples_per_identity=2, mated_probes=20, nonmated_probes=20, seed=21)
