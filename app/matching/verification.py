"""Verification (1:1): probes against one named record, decided at the calibrated FMR."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.cases.service import ensure_searchable, visible_case
from app.core.errors import NotFound
from app.galleries.models import Gallery, Record
from app.galleries.service import template_format
from app.galleries.templates import decode_templates
from app.matching.schemas import VerificationIn
from app.matching.service import rate_or_invalid, resolve_targets
from app.principals.models import Principal

if TYPE_CHECKING:
    from app.runtime import Runtime


def verify(
    session: Session, runtime: Runtime, actor: Principal, case_id: int, request: VerificationIn
) -> dict[str, Any]:
    case = visible_case(session, actor, case_id)
    ensure_searchable(case)
    gallery = session.get(Gallery, request.gallery_id)
    missing = NotFound(f"record {request.reference_id} not found in gallery {request.gallery_id}")
    if gallery is None or gallery.country not in case.presumed_countries:
        raise missing
    fmt = template_format(gallery)
    targets, skipped = resolve_targets(session, case, gallery.modality, fmt, [gallery.country])
    if gallery.id not in targets:
        raise NotFound(
            f"no agreement covers {gallery.country}'s {gallery.modality} gallery", code="no_agreement", details=skipped
        )
    record = session.scalar(
        select(Record).where(Record.gallery_id == gallery.id, Record.reference_id == request.reference_id)
    )
    if record is None:
        raise missing
    probes = decode_templates(fmt, request.probes, request.probes_b64, runtime.settings.max_probes, what="probe")
    fmr = rate_or_invalid(request.target_fmr or runtime.settings.default_fmr, "fmr")
    score = runtime.registry.get(gallery.id).score_record(record.id, probes)
    if score is None:
        raise missing
    calibrated = runtime.thresholds.for_verification(gallery.id, fmr)
    decision = "match" if score >= calibrated.thresholds.match else "no_match"
    audit.append(
        session,
        actor,
        "verification",
        f"case/{case.id}/gallery/{gallery.id}/record/{record.reference_id}",
        details={"decision": decision, "fmr": fmr},
    )
    return {
        "score": score,
        "decision": decision,
        "threshold": calibrated.thresholds.match,
        "target_fmr": fmr,
        "calibration_resolved": calibrated.resolved,
    }
