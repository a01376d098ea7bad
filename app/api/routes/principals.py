from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import Admin, RuntimeDep, SessionsDep
from app.core.ids import RowId
from app.principals import service
from app.principals.models import Principal
from app.principals.schemas import PrincipalCreated, PrincipalIn, PrincipalOut

router = APIRouter(prefix="/v1/principals", tags=["principals"])


@router.post("", status_code=201, response_model=PrincipalCreated, summary="Create a principal and its API key")
def create_principal(body: PrincipalIn, actor: Admin, sessions: SessionsDep) -> dict[str, object]:
    """The key is in the response only: it is stored as a hash and cannot be shown again."""
    principal, key = service.create_principal(sessions, actor, body.name, body.role, body.country, body.agency)
    return {**PrincipalOut.model_validate(principal, from_attributes=True).model_dump(), "api_key": key}


@router.delete("/{principal_id}", status_code=204, summary="Revoke a principal's key")
def revoke_principal(principal_id: RowId, actor: Admin, runtime: RuntimeDep) -> Response:
    service.revoke_principal(runtime.sessions, actor, principal_id)
    return Response(status_code=204)


@router.get("", response_model=list[PrincipalOut], summary="List principals (never their keys)")
def list_principals(actor: Admin, sessions: SessionsDep) -> list[Principal]:
    return service.list_principals(sessions)
