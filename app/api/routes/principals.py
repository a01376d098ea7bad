from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.api.deps import SessionDep, require
from app.core.ids import RowId
from app.principals import service
from app.principals.models import Principal, Role
from app.principals.schemas import PrincipalCreated, PrincipalIn, PrincipalOut

router = APIRouter(prefix="/v1/principals", tags=["principals"])
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def _out(principal: Principal) -> dict[str, object]:
    return {c: getattr(principal, c) for c in ("id", "name", "role", "country", "agency", "created_at", "revoked_at")}


@router.post("", status_code=201, response_model=PrincipalCreated, summary="Create a principal and its API key")
def create(body: PrincipalIn, actor: Admin, session: SessionDep) -> dict[str, object]:
    """The key is in the response only: it is stored as a hash and cannot be shown again."""
    with session.begin():
        principal, key = service.create_principal(session, actor, body.name, body.role, body.country, body.agency)
    return {**_out(principal), "api_key": key}


@router.delete("/{principal_id}", status_code=204, summary="Revoke a principal's key")
def revoke(principal_id: RowId, actor: Admin, session: SessionDep) -> Response:
    with session.begin():
        service.revoke_principal(session, actor, principal_id)
    return Response(status_code=204)


@router.get("", response_model=list[PrincipalOut], summary="List principals (never their keys)")
def list_all(actor: Admin, session: SessionDep) -> list[dict[str, object]]:
    return [_out(p) for p in service.list_principals(session)]
