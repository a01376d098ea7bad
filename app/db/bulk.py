"""Bulk writes at storage speed, for loads of thousands of rows in one transaction.

An ORM or Core insert with RETURNING costs a statement (SQLite) or Python bookkeeping per row.
Here the ids of new rows are reserved in one statement, so that the rows can be written without
RETURNING: by the driver's ``executemany`` on SQLite, by ``COPY`` on PostgreSQL. Values go
through each column's own bind processing, so that what is stored is what an ORM insert would
have stored.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, any_, bindparam, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session


def one_of(session: Session, column: InstrumentedAttribute[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values`` for thousands of values in one bound parameter: an array on
    PostgreSQL, a JSON array on SQLite (whose statements take at most 32,766 parameters), not
    one parameter for each value to bind and plan."""
    if session.connection().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    members: Select[Any] = select(literal_column("value")).select_from(func.json_each(json.dumps(list(values))))
    return column.in_(members.scalar_subquery())


def reserve_ids(session: Session, table: Table, count: int) -> list[int]:
    """``count`` unused ids of ``table``'s integer primary key, for rows inserted in this
    transaction. PostgreSQL takes them from the column's sequence, as its own default would,
    so concurrent transactions never get the same id. SQLite has one writer at a time, and
    this transaction is it (app/db/session.py begins every write ``IMMEDIATE``): the ids after
    the largest are free until it commits, and they are the ones SQLite itself would choose."""
    if count == 0:
        return []
    (key,) = table.primary_key.columns
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        reserved = connection.execute(  # one round trip; the sequence looked up once, not per id (2 µs each)
            _RESERVE_FROM_SEQUENCE, {"table": table.name, "column": key.name, "count": count}
        ).scalar_one()
        return list(reserved)
    if connection.dialect.name == "sqlite" and not connection.info.get("holds_write_lock"):
        raise RuntimeError("ids reserved outside a write transaction")
    largest = connection.execute(_largest_id(table)).scalar_one()
    return list(range(largest + 1, largest + 1 + count))


_RESERVE_FROM_SEQUENCE = text(
    "WITH named AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence(:table, :column) AS regclass) AS sequence) "
    "SELECT array_agg(nextval(named.sequence)) FROM named, generate_series(1, :count)"
)


@functools.cache
def _largest_id(table: Table) -> Select[Any]:
    """Built once per table: every stored identification reserves its id, and building the
    statement cost more than running it."""
    (key,) = table.primary_key.columns
    return select(func.coalesce(func.max(key), 0))


def bind(session: Session, column: ColumnElement[Any]) -> Callable[[Any], Any]:
    """How ``column``'s type turns a Python value into what the driver receives (JSON text,
    UTC timestamps, ...); the identity where the driver takes the value as it is."""
    dialect = session.connection().dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else _same


def _same(value: Any) -> Any:
    return value


def write_rows(session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Insert rows of already bound values (see :func:`bind`) in this transaction: ``COPY`` on
    PostgreSQL, the driver's ``executemany`` elsewhere."""
    connection = session.connection()
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            # Binary COPY: bytea and numbers go as they are, not as text to parse (twice the
            # rate for templates); the columns' types come from the server's catalogue.
            cursor.execute(
                "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                (table.name,),
            )
            types = dict(cursor.fetchall())
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([types[name] for name in columns])
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", list(rows))
