"""Free text as the API takes it: any character but NUL.

PostgreSQL's ``text`` cannot hold NUL (SQLite can), so a reference id, a note or a name with
one was a server error on PostgreSQL after validation had passed. It is refused with the
request's other mistakes instead, on either database (the same rule for the same API)."""

from __future__ import annotations

from pydantic import StringConstraints

WITHOUT_NUL = r"^[^\x00]*$"


def text(max_length: int, min_length: int = 0) -> StringConstraints:
    """The constraints of a free-text field: ``Annotated[str, text(128, min_length=1)]``."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=WITHOUT_NUL)
