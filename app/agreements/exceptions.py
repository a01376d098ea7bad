"""Refusals of the agreements domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Invalid


class InvalidAgreement(Invalid):
    code = "invalid_agreement"
