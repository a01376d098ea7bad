"""Refusals of the principals domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Invalid, NotFound, Unauthenticated


class UnknownKey(Unauthenticated):
    code = "unauthenticated"


class MissingCountry(Invalid):
    code = "missing_country"


class MissingAgency(Invalid):
    code = "missing_agency"


class UnknownPrincipal(NotFound):
    code = "not_found"
