"""Refusals of the index registry, each with its stable code."""

from __future__ import annotations

from app.core.errors import Unavailable


class IndexUnavailable(Unavailable):
    """The gallery's index is not loaded yet (the service is starting): retry shortly."""

    code = "index_unavailable"
