from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import RuntimeDep, SessionDep, require
from app.api.openapi import refusal
from app.audit import service as audit
from app.cases import service
from app.cases.models import Case, CaseStatus
from app.cases.schemas import CaseIn, CaseOut, CaseUpdate
from app.core.ids import RowId
from app.matching import service as matching
from app.matching.models import Search
from app.matching.schemas import IdentificationIn, SearchOut, VerificationIn, VerificationOut
from app.matching.verification import verify
from app.principals.models import Principal, Role

router = APIRouter(prefix="/v1/cases", tags=["cases"])
BorderPolice = Annotated[Principal, Depends(require(Role.BORDER_POLICE))]
NOT_SEARCHABLE = refusal("deadline_passed: the case's detention deadline is past; case_not_open: the case is closed")


def case_view(session: Session, case: Case) -> dict[str, object]:
    searches = list(session.scalars(select(Search).where(Search.case_id == case.id).order_by(Search.id)))
    candidates = matching.candidates_of(session, [s.id for s in searches])
    return {
        **{
            c: getattr(case, c)
            for c in (
                "id",
                "external_ref",
                "agency",
                "detained_at",
                "detention_limit_days",
                "deadline",
                "presumed_countries",
                "legal_basis",
                "status",
                "created_at",
            )
        },
        "searches": [
            {
                "id": s.id,
                "status": s.status,
                "submitted_at": s.submitted_at,
                "finished_at": s.finished_at,
                "candidates": [
                    {
                        "id": c.id,
                        "country": c.country,
                        "rank": c.rank,
                        "score": c.score,
                        "band": c.band,
                        "review_state": c.review_state,
                    }
                    for c in candidates
                    if c.search_id == s.id
                ],
            }
            for s in searches
        ],
    }


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
def open_case(body: CaseIn, actor: BorderPolice, session: SessionDep) -> dict[str, object]:
    """The deadline is ``detained_at`` + ``detention_limit_days``; the case is visible to the
    calling agency only. A deadline already passed is refused with ``deadline_passed``."""
    with session.begin():
        case = service.open_case(
            session,
            actor,
            body.external_ref,
            body.detained_at,
            body.detention_limit_days,
            body.presumed_countries,
            body.legal_basis,
        )
        return case_view(session, case)


@router.get("/{case_id}", response_model=CaseOut, summary="Read a case with its searches and candidate states")
def read_case(case_id: RowId, actor: BorderPolice, session: SessionDep) -> dict[str, object]:
    with session.begin():
        case = service.visible_case(session, actor, case_id)
        view = case_view(session, case)
        audit.append(session, actor, "case.read", f"case/{case_id}")
    return view


@router.patch(
    "/{case_id}",
    response_model=CaseOut,
    summary="Close a case, or mark it unidentified",
    responses={409: refusal("invalid_transition: the case's status does not allow this change")},
)
def update_case(case_id: RowId, body: CaseUpdate, actor: BorderPolice, session: SessionDep) -> dict[str, object]:
    with session.begin():
        case = service.visible_case(session, actor, case_id, for_update=True)
        service.move(session, actor, case, CaseStatus(body.status), "requested by the agency")
        return case_view(session, case)


@router.post(
    "/{case_id}/identifications",
    response_model=SearchOut,
    summary="Identify (1:N) against the allowed galleries",
    responses={
        202: {"model": SearchOut, "description": "queued or running: poll GET /v1/searches/{id}"},
        409: NOT_SEARCHABLE,
    },
)
def identify(case_id: RowId, body: IdentificationIn, actor: BorderPolice, runtime: RuntimeDep) -> JSONResponse:
    """Searches every gallery of the modality and template format whose country is presumed (or
    named in ``countries``) and covered by an agreement in force today; other countries are listed
    in ``skipped``. One candidate per record (best over probe and record samples), above the
    ``possible`` threshold at 10x ``target_fpir``; ``match`` above the threshold at ``target_fpir``.
    An empty list means no candidate. Answers 200 with the result when it is ready within
    ``wait_ms``, else 202: the search runs in deadline order and can be polled."""
    with runtime.sessions() as session, session.begin():
        search = matching.submit_identification(session, actor, case_id, body, runtime.settings)
        search_id, deadline, targets, queued = search.id, search.deadline, search.targets, search.status == "queued"
    if queued:
        runtime.scheduler.submit(search_id, deadline, tuple(sorted(targets)))
        runtime.scheduler.wait(search_id, body.wait_ms / 1000)
    with runtime.sessions() as session, session.begin():
        view = matching.read_search(session, actor, search_id)
    done = view["status"] not in ("queued", "running")
    return JSONResponse(SearchOut.model_validate(view).model_dump(mode="json"), status_code=200 if done else 202)


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
def verification(case_id: RowId, body: VerificationIn, actor: BorderPolice, runtime: RuntimeDep) -> dict[str, object]:
    """Scores the probes against one enrolled record of a presumed country's gallery covered by an
    agreement; the decision is taken at the gallery's calibrated threshold for ``target_fmr``."""
    with runtime.sessions() as session, session.begin():
        return verify(session, runtime, actor, case_id, body)
