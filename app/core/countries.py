"""ISO 3166-1 alpha-3 country codes, checked against pycountry's table.

``Country`` is the one type of a country code in request bodies: three capital letters at
validation (anything else is a ``validation_error``), and in the OpenAPI schema the enumeration
of the codes pycountry knows, so that a generated client offers exactly the codes the service
accepts. Whether a well-formed code is a real one is checked by the use cases with
``check_country``, which answers ``invalid_country`` (422), the code clients already branch on.
"""

from __future__ import annotations

from typing import Annotated, Any

import pycountry
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from app.core.errors import InvalidCountry

ALPHA_3: tuple[str, ...] = tuple(sorted(country.alpha_3 for country in pycountry.countries))


def check_country(code: str) -> str:
    if len(code) != 3 or pycountry.countries.get(alpha_3=code.upper()) is None or code != code.upper():
        raise InvalidCountry(f"{code!r} is not an ISO 3166-1 alpha-3 country code")
    return code


class _Alpha3:
    """The pydantic side of ``Country``: one named schema (``Country``) for every use. The JSON
    schema rides on the core schema itself, so that the definition pydantic writes out once under
    that name is the enumeration, and every field refers to it."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.str_schema(
            pattern=r"^[A-Z]{3}$", ref="Country", metadata={"pydantic_js_functions": [cls._json_schema]}
        )

    @staticmethod
    def _json_schema(schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {
            "type": "string",
            "enum": list(ALPHA_3),
            "title": "Country",
            "description": "ISO 3166-1 alpha-3 country code. Three capital letters that are not an assigned "
            "code are refused with invalid_country (422).",
        }


Country = Annotated[str, _Alpha3]
