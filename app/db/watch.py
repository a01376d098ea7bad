"""Committed writes to chosen tables, told to this process as they commit: what keeps a cache of
rows in step with the database it caches, whichever use case wrote them.

Every ORM flush and Core statement an engine runs is seen here (on a session or a connection
alike), so no write path can forget to tell the cache; the service writes no textual SQL to
the watched tables (a textual statement names no table to see). The callback runs twice for a
transaction that wrote a watched table: when it is about to commit, and once its connection is
back in the pool, committed. A cache tags what it reads with its generation and bumps it at each
call (app/core/cache.py): a row read before the commit was visible, and put after the first
call, is dropped by the second. On PostgreSQL such a transaction also notifies ``channel``, so
that the other processes and nodes on the database learn of it as it commits
(:class:`app.db.notify.Notified`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, event


def on_committed_writes(
    engine: Engine, watched: Mapping[str, set[str]], told: Callable[[], None], channel: str
) -> None:
    """Call ``told()`` when a transaction of ``engine`` that ran one of ``watched``'s statements
    (table name -> {"insert", "update", "delete"}) commits, and notify ``channel`` then."""
    notifies = engine.dialect.name == "postgresql"
    written, committed = f"readmit.written.{channel}", f"readmit.committed.{channel}"  # one pair per watch

    @event.listens_for(engine, "after_cursor_execute")
    def seen(connection: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool) -> None:
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        kind = "insert" if context.isinsert else "update" if context.isupdate else "delete"
        table = getattr(context.compiled.statement, "table", None)  # none on a textual statement
        if table is not None and kind in watched.get(table.name, ()):
            connection.info[written] = True

    @event.listens_for(engine, "commit")
    def committing(connection: Any) -> None:
        if connection.info.pop(written, False):
            connection.info[committed] = True
            if notifies:  # on the driver's connection: sent with the transaction, delivered at its commit
                connection.connection.dbapi_connection.execute(f"NOTIFY {channel}")
            told()

    @event.listens_for(engine, "rollback")
    def rolled_back(connection: Any) -> None:
        connection.info.pop(written, None)

    @event.listens_for(engine.pool, "checkin")
    def returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(committed, False):
            told()
