"""Refusals of the review domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Conflict, Invalid, NotFound


class UnknownCandidate(NotFound):
    code = "not_found"


class UnknownReviewPolicy(NotFound):
    """A consul asking for another country's policy: no existence leak."""

    code = "not_found"


class AlreadyDecided(Conflict):
    code = "already_decided"


class SameReviewer(Conflict):
    """Four-eyes: the consul who confirmed first cannot also give the second decision."""

    code = "same_reviewer"


class NoteRequired(Invalid):
    code = "note_required"
