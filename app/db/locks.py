"""Locks that span every process and node of one database.

PostgreSQL advisory locks, held by a connection of their own for the length of a ``with``
block: the steps that must run once however many processes start together (migrations, sealing
clear data) run under one. SQLite has one serving process per database file (see
app/core/datalock.py), so it needs none.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text


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
