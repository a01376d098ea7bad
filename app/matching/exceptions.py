"""Refusals of the matching domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Invalid, NotFound, Unavailable


class UnknownSearch(NotFound):
    code = "not_found"


class CountryNotPresumed(Invalid):
    code = "country_not_presumed"


class InvalidFpir(Invalid):
    code = "invalid_fpir"


class InvalidFmr(Invalid):
    code = "invalid_fmr"


class NoAgreement(NotFound):
    """No agreement in force covers the gallery the caller named: as if it did not exist."""

    code = "no_agreement"


class SearchNotRecorded(Unavailable):
    """The batch that ran a search failed to write it: nothing of it was kept, and submitting it
    again is safe."""

    code = "search_not_recorded"


class IdempotencyKeyReused(Invalid):
    """The ``Idempotency-Key`` already names another request of this case: reusing a key for a
    different request is a client's error, never answered with the other request's search."""

    code = "idempotency_key_reused"


class LowQuality(Invalid):
    """Every sample of the probe is below its modality's minimum quality: searching it would
    return noise. ``details.samples`` names them, each with its quality and the minimum."""

    code = "low_quality"


class InvalidQuality(Invalid):
    """``qualities`` does not have one entry per probe sample."""

    code = "invalid_quality"
