"""Refusals of the index registry, each with its stable code."""

from __future__ import annotations

from app.core.errors import Unavailable


class IndexUnavailable(Unavailable):
    """The gallery's index is not loaded yet (the service is starting): retry shortly."""

    code = "index_unavailable"


class ShardsUnplaceable(Unavailable):
    """The Ray cluster cannot give a gallery's shards the CPUs they ask for (too few, or held by
    other galleries): the same request may succeed once CPUs are added or freed, so a 503."""

    code = "shards_unplaceable"


class ChangeLogGap(Unavailable):
    """The change log does not hold every change after an index's number (changes committed
    before the log existed): that index is rebuilt from the database instead of caught up."""

    code = "change_log_gap"
