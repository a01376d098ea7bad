"""Dates and instants as clients write them: ISO 8601 / RFC 3339 strings, nothing else.

Pydantic reads a number given for a date or a datetime as a Unix timestamp: a client's
``"valid_to": 1.5`` became an agreement ending on 1 January 1970, a silent misreading of a
legal date. Numbers are refused instead, with the usual 422.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator


def _written(value: Any) -> Any:
    if isinstance(value, int | float):
        raise ValueError("a date or time is written as an ISO 8601 string, not a number")
    return value


Day = Annotated[date, BeforeValidator(_written)]
Instant = Annotated[datetime, BeforeValidator(_written)]
