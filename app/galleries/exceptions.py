"""Refusals of the galleries domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Conflict, DomainError, Invalid, NotFound


class UnknownGallery(NotFound):
    code = "unknown_gallery"


class UnknownRecord(NotFound):
    code = "not_found"


class DuplicateGallery(Conflict):
    code = "duplicate_gallery"


class InvalidTemplate(Invalid):
    """Wrong dimension or format, NaN or Inf, zero norm, undecodable base64."""

    code = "invalid_template"


class TooManyTemplates(Invalid):
    code = "too_many_templates"


class DuplicateReference(Invalid):
    """The same reference id twice in one batch: which one to keep would be a guess."""

    code = "duplicate_reference"


class MissingReference(Invalid):
    code = "missing_reference"


class BatchTooLarge(DomainError):
    code = "batch_too_large"


class InvalidQuality(Invalid):
    """Not one quality per template, or one outside 0-100 or not a number."""

    code = "invalid_quality"


class LowQuality(Invalid):
    """Every template of the record is below its modality's minimum enrolment quality."""

    code = "low_quality"
