"""Verification (1:1): probes against one named record, decided at the calibrated FMR."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.service import ensure_open, visible_case
from app.core.config import Settings
from app.db.session import Sessions, transaction
from app.galleries.exceptions import UnknownRecord
from app.galleries.models import Gallery
from app.galleries.service import find_record, template_format
from app.galleries.templates import EncodedTemplates
from app.indexes.backends import MatcherIndex
from app.matching.exceptions import InvalidFmr, NoAgreement
from app.matching.service import requested_rate, resolve_galleries
from app.matching.terms import DatabaseTerms
from app.matching.thresholds import ThresholdBook
from app.principals.models import Principal


@dataclass(frozen=True)
class VerificationRequest:
    gallery_id: int
    reference_id: str
    probes: EncodedTemplates
    target_fmr: float | None = None
    """Default: the service's configured FMR."""


@dataclass(frozen=True)
class VerificationView:
    score: float
    decision: str
    """``match`` or ``no_match`` at the calibrated threshold."""
    threshold: float
    target_fmr: float
    calibration_resolved: bool


def verify(
    sessions: Sessions,
    read_sessions: Sessions,
    index_of: Callable[[int], MatcherIndex],
    thresholds: ThresholdBook,
    settings: Settings,
    actor: Principal,
    case_id: int,
    request: VerificationRequest,
) -> VerificationView:
    """Score the probes against one enrolled record of a presumed country's gallery covered by
    an agreement; the decision and the FMR it was taken at are audited.

    The checks read through ``read_sessions``, and the thresholds are found outside any
    transaction: the first verification after a start may draw or load the gallery's calibration,
    which writes in a transaction of its own. Inside this one, on SQLite, it waited for the
    writers' turn its own thread held, and every request after it queued behind that turn.
    The one write, the audit event, comes last, in a short transaction of its own.
    ``index_of`` gives the gallery's index up to date with the database: a record enrolled or
    replaced through another node a moment before is scored as it is now."""
    with read_sessions() as session:
        case = visible_case(session, actor, case_id)
        ensure_open(case)
        gallery = session.get(Gallery, request.gallery_id)
        if gallery is None or gallery.country not in case.presumed_countries:
            raise UnknownRecord(f"record {request.reference_id} not found in gallery {request.gallery_id}")
        fmt = template_format(gallery)
        searched, skipped = resolve_galleries(DatabaseTerms(session), case, gallery.modality, fmt, [gallery.country])
        if gallery.id not in searched:
            raise NoAgreement(f"no agreement covers {gallery.country}'s {gallery.modality} gallery", details=skipped)
        record = find_record(session, gallery.id, request.reference_id, gallery.country)
        resource = f"case/{case.id}/gallery/{gallery.id}/record/{record.reference_id}"
        countries = [case.agency_country, gallery.country]  # not the case's other presumed countries
        gallery_id, record_id = gallery.id, record.id
    probes = request.probes.decode(fmt, settings.max_probes, what="probe")
    fmr = requested_rate(request.target_fmr or settings.default_fmr, InvalidFmr)
    score = index_of(gallery_id).score_record(record_id, probes)
    if score is None:
        raise UnknownRecord(f"record {request.reference_id} not found in gallery {request.gallery_id}")
    calibrated = thresholds.for_verification(gallery_id, fmr)
    decision = "match" if score >= calibrated.thresholds.match else "no_match"
    with transaction(sessions) as session:  # the case still open as the decision is recorded
        ensure_open(visible_case(session, actor, case_id))
        audit.append(
            session, actor, Action.RECORD_VERIFY, resource, countries, details={"decision": decision, "fmr": fmr}
        )
    return VerificationView(score, decision, calibrated.thresholds.match, fmr, calibrated.resolved)
