"""Ids as clients send them: in paths, queries and bodies."""

from typing import Annotated

from annotated_types import Ge, Le

from app.core.numbers import Integer

RowId = Annotated[int, Ge(1), Le(2**63 - 1)]
"""A database id: positive and within the 64-bit range of SQLite's INTEGER and PostgreSQL's
BIGINT. Anything else is a 422 from validation, never an overflow inside the database driver
(which the fuzzer found as a 500)."""

BodyRowId = Annotated[Integer, Ge(1), Le(2**63 - 1)]
"""A database id in a request body: a JSON integer only (app/core/numbers.py)."""
