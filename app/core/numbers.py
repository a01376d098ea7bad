"""Numbers and booleans in request bodies as clients write them: JSON numbers and JSON booleans,
nothing else.

Pydantic's lax mode reads ``true`` as 1 and ``"5"`` as 5, and ``1`` or ``"yes"`` as true: a
client's ``"wait_ms": true`` would wait one millisecond, and a request the schema calls invalid
would be accepted (the schema fuzzer found one). Such values are refused with the usual 422.
Strict mode cannot be set for whole models: FastAPI validates bodies in Python mode, where strict
mode would refuse the ISO 8601 strings of dates and the strings of enums too. Paths and queries
keep lax integers: there every value arrives as text.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict, StrictBool
from pydantic_core import PydanticCustomError


def _json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a JSON integer")
    return value


Integer = Annotated[int, BeforeValidator(_json_number)]
"""A JSON integer; ``1.0`` is one too, as in JSON Schema."""

Number = Annotated[float, Strict()]
"""A JSON number (strict: an int is taken, a boolean or a string is not; no Python call per value,
which matters for the 512 numbers of a template)."""

Boolean = StrictBool
"""``true`` or ``false``."""
