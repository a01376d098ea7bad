from __future__ import annotations

from fastapi import APIRouter

from app.agreements import service
from app.agreements.models import Agreement
from app.agreements.schemas import AgreementIn, AgreementOut
from app.api.deps import Admin, SessionsDep

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])


@router.post("", status_code=201, response_model=AgreementOut, summary="Record a data-sharing agreement")
def create_agreement(body: AgreementIn, actor: Admin, sessions: SessionsDep) -> Agreement:
    """Without an agreement in force, a receiving state cannot search the origin country's galleries."""
    return service.create_agreement(
        sessions, actor, body.receiving_country, body.origin_country, body.modalities, body.valid_from, body.valid_to
    )


@router.get("", response_model=list[AgreementOut], summary="List agreements")
def list_agreements(actor: Admin, sessions: SessionsDep) -> list[Agreement]:
    return service.list_agreements(sessions)
