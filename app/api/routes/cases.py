from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.api.deps import BorderPolice, RuntimeDep, SessionsDep
from app.api.openapi import refusal
from app.cases import service
from app.cases.links import LinkView, read_links
from app.cases.models import CaseStatus
from app.cases.schemas import CaseIn, CaseLinkOut, CaseOut, CaseUpdate
from app.core.ids import RowId
from app.federation import searches as federated
from app.galleries.templates import EncodedTemplates
from app.matching import service as matching
from app.matching import verification
from app.matching.models import IDEMPOTENCY_KEY_LENGTH, SearchStatus
from app.matching.schemas import IdentificationIn, ModalityProbesIn, SearchOut, VerificationIn, VerificationOut
from app.matching.views import CaseView, SearchView
from matcher import TemplateFormat

router = APIRouter(prefix="/v1/cases", tags=["cases"])
NOT_SEARCHABLE = refusal("deadline_passed: the case's detention deadline is past; case_not_open: the case is closed")


@router.post(
    "",
    status_code=201,
    response_model=CaseOut,
    summary="Open a case for a detained person",
    responses={
        409: refusal(
            "deadline_passed: the detention deadline is already past; duplicate_case: the agency already "
            "has a case with this external_ref"
        )
    },
)
def open_case(body: CaseIn, actor: BorderPolice, sessions: SessionsDep) -> CaseView:
    """The deadline is ``detained_at`` + ``detention_limit_days``; the case is visible to the
    calling agency only. A deadline already passed is refused with ``deadline_passed``."""
    return service.open_case(
        sessions,
        actor,
        body.external_ref,
        body.detained_at,
        body.detention_limit_days,
        body.presumed_countries,
        body.legal_basis,
    )


@router.get("/{case_id}", response_model=CaseOut, summary="Read a case with its searches and candidate states")
def read_case(case_id: RowId, actor: BorderPolice, sessions: SessionsDep) -> CaseView:
    return service.read_case(sessions, actor, case_id)


@router.get(
    "/{case_id}/links", response_model=list[CaseLinkOut], summary="Other cases of the agency holding the same person"
)
def read_case_links(case_id: RowId, actor: BorderPolice, sessions: SessionsDep) -> list[LinkView]:
    """Cases of the calling agency whose stored probes match this case's, found after each
    identification. Only cases whose legal basis allows it are compared (not ``consent``), and
    only while their probes are stored (see README, "Links between cases")."""
    return read_links(sessions, actor, case_id)


@router.patch(
    "/{case_id}",
    response_model=CaseOut,
    summary="Close a case, or mark it unidentified",
    responses={409: refusal("invalid_transition: the case's status does not allow this change")},
)
def update_case(case_id: RowId, body: CaseUpdate, actor: BorderPolice, sessions: SessionsDep) -> CaseView:
    return service.change_status(sessions, actor, case_id, CaseStatus(body.status))


@router.post(
    "/{case_id}/identifications",
    response_model=SearchOut,
    summary="Identify (1:N) against the allowed galleries",
    responses={
        202: {"model": SearchOut, "description": "queued or running: poll GET /v1/searches/{id}"},
        409: NOT_SEARCHABLE,
        422: refusal(
            "invalid_template: a probe not of the format's dimension, not finite, of zero norm, or bad base64; "
            "too_many_templates: more probes than READMIT_MAX_PROBES; country_not_presumed: ``countries`` names a "
            "country the case does not presume; invalid_fpir: target_fpir out of range; "
            "low_quality: every probe sample is below its modality's minimum quality (details.samples names each, "
            "with its quality and the minimum); invalid_quality: not one quality per probe sample; validation_error: "
            "both the single-modality form and modalities, or neither, or a modality twice; "
            "idempotency_key_reused: the Idempotency-Key was sent with another request in this case"
        ),
    },
)
async def identify(
    case_id: RowId,
    body: IdentificationIn,
    actor: BorderPolice,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=IDEMPOTENCY_KEY_LENGTH,
            pattern=r"^[\x21-\x7e]+$",
            description="A key of the client's (a UUID, say; visible ASCII without spaces, at most 255 characters) "
            "that makes a resend safe: the same request resent with it, to any process or node, answers the search "
            "it made (200 when ended, else 202) instead of running another. The same key with another request in "
            "the case is refused (422 idempotency_key_reused).",
        ),
    ] = None,
) -> SearchView:
    """Searches every gallery of the modality and template format whose country is presumed (or
    named in ``countries``) and covered by an agreement in force today; other countries are listed
    in ``skipped``. One candidate per record (best over probe and record samples), above the
    ``possible`` threshold at 10x ``target_fpir``; ``match`` above the threshold at ``target_fpir``.
    An empty list means no candidate. Answers 200 with the result when it is ready within
    ``wait_ms``, else 202: the search runs in deadline order and can be polled.

    With ``modalities`` (fingerprints and a face, say), each modality is searched in the
    country's gallery of that modality and candidates are people, ranked by a fused score (see
    ``modalities``), each with what every modality said. Probe samples below
    ``READMIT_MIN_PROBE_QUALITY`` are dropped and listed in ``dropped_samples``."""
    entries: list[IdentificationIn | ModalityProbesIn] = [*body.modalities] if body.modalities else [body]
    request = matching.IdentificationRequest(
        probe_sets=tuple(_probe_set(entry) for entry in entries),
        fused=body.modalities is not None,
        countries=body.countries,
        max_candidates=body.max_candidates,
        target_fpir=body.target_fpir,
        allow_partial_results=body.allow_partial_results,
        idempotency_key=idempotency_key,
    )
    parts = federated.Searching(runtime.matching, runtime.channel)
    view = await federated.identify(parts, actor, case_id, request, body.wait_ms / 1000, body.retry_unavailable_peers)
    if view.status in (SearchStatus.QUEUED.value, SearchStatus.RUNNING.value):
        response.status_code = 202
    return view


def _probe_set(entry: IdentificationIn | ModalityProbesIn) -> matching.ProbeSet:
    """One modality's probes (the body itself, in the single-modality form, which its schema
    has checked names the modality and the format)."""
    assert entry.modality is not None and entry.template_format is not None
    fmt = entry.template_format
    return matching.ProbeSet(
        entry.modality,
        TemplateFormat(fmt.model, fmt.dimension, fmt.metric),
        EncodedTemplates(entry.probes, entry.probes_b64),
        entry.qualities,
    )


@router.post(
    "/{case_id}/verifications",
    response_model=VerificationOut,
    summary="Verify (1:1) against one record",
    responses={
        404: refusal(
            "not_found: the case, or the record in a presumed country's gallery; no_agreement: no agreement "
            "in force covers the gallery's country and modality"
        ),
        409: NOT_SEARCHABLE,
    },
)
def verify(
    case_id: RowId, body: VerificationIn, actor: BorderPolice, runtime: RuntimeDep
) -> verification.VerificationView:
    """Scores the probes against one enrolled record of a presumed country's gallery covered by an
    agreement; the decision is taken at the gallery's calibrated threshold for ``target_fmr``."""
    request = verification.VerificationRequest(
        body.gallery_id, body.reference_id, EncodedTemplates(body.probes, body.probes_b64), body.target_fmr
    )
    return verification.verify(
        runtime.sessions,
        runtime.read_sessions,
        runtime.current_index,
        runtime.thresholds,
        runtime.settings,
        actor,
        case_id,
        request,
    )
