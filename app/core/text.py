"""Free text as the API takes it: any character but NUL.

PostgreSQL's ``text`` cannot hold NUL (SQLite can), so a reference id, a note or a name with
one was a server error on PostgreSQL after validation had passed. It is refused with the
request's other mistakes instead, on either database (the same rule for the same API)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

WITHOUT_NUL = r"^[^\x00]*$"


def text(max_length: int, min_length: int = 0) -> StringConstraints:
    """The constraints of a free-text field: ``Annotated[str, text(128, min_length=1)]``."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=WITHOUT_NUL)


ReferenceId = Annotated[str, text(128, min_length=1)]
"""A record's reference in its registry, as a gallery enrols it and a peer node reports it."""

Attributes = Annotated[dict[Annotated[str, text(64)], Annotated[str, text(256)]], Field(max_length=32)]
"""A record's identity attributes (name, date of birth, ...), at most 32."""
