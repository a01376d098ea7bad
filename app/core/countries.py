"""ISO 3166-1 alpha-3 country codes, checked against pycountry's table."""

from __future__ import annotations

import pycountry

from app.core.errors import InvalidCountry


def check_country(code: str) -> str:
    if len(code) != 3 or pycountry.countries.get(alpha_3=code.upper()) is None or code != code.upper():
        raise InvalidCountry(f"{code!r} is not an ISO 3166-1 alpha-3 country code")
    return code
