from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Auditor, SessionsDep
from app.audit import service
from app.audit.schemas import AuditPage, ChainVerificationOut

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/events", response_model=AuditPage, summary="Read the audit trail in order")
def list_audit_events(
    actor: Auditor,
    sessions: SessionsDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="return events with seq greater than this")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, object]:
    page = service.read_events(sessions, actor, after, limit)
    return {"events": page, "next_after": page[-1].seq if len(page) == limit else None}


@router.get("/verify", response_model=ChainVerificationOut, summary="Recompute the hash chain")
def verify_audit_chain(actor: Auditor, sessions: SessionsDep) -> service.Verification:
    """Names the first event whose hash, link or sequence does not match."""
    return service.verify(sessions, actor)
