"""Old copies of rewritten rows, removed from the database's files.

Rewriting a row does not erase its old bytes at once: SQLite leaves them in free pages (and the
write-ahead log), PostgreSQL in dead tuples until a vacuum, and even then in reusable space. After
clear templates and probes are sealed in place, the files are rewritten so that no clear copy is
left in them: ``VACUUM`` and a truncating checkpoint on SQLite, ``VACUUM FULL`` of the two
tables on PostgreSQL (both take the tables for the time they need: once, at the first start
with encryption on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine


def rewrite_tables(engine: Engine, tables: Sequence[str]) -> None:
    # Outside any transaction (neither statement runs in one), on a connection of its own that
    # leaves the pool, as the session layer would otherwise begin a transaction around it.
    connection = engine.raw_connection()
    driver: Any = connection.driver_connection
    connection.detach()
    try:
        if engine.dialect.name == "sqlite":
            driver.execute("VACUUM")
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            driver.autocommit = True
            driver.execute(f"VACUUM FULL {', '.join(tables)}")
    finally:
        connection.close()
