"""Refusals of the cases domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Conflict, Invalid, NotFound


class UnknownCase(NotFound):
    code = "not_found"


class DuplicateCase(Conflict):
    code = "duplicate_case"


class DeadlinePassed(Conflict):
    code = "deadline_passed"


class CaseNotOpen(Conflict):
    code = "case_not_open"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class InvalidDetentionStart(Invalid):
    code = "invalid_detention_start"
