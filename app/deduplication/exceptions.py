"""Refusals of the deduplication domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Invalid, NotFound


class UnknownDeduplication(NotFound):
    code = "not_found"


class InvalidDeduplication(Invalid):
    code = "invalid_fmr"
