"""Refusals of the review domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Conflict, NotFound


class UnknownCandidate(NotFound):
    code = "not_found"


class AlreadyDecided(Conflict):
    code = "already_decided"
