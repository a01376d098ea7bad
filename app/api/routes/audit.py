from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Auditor, RuntimeDep, SessionsDep
from app.api.openapi import refusal
from app.audit import log, service
from app.audit.schemas import (
    AuditPage,
    ChainVerificationOut,
    CheckpointOut,
    ConsistencyProofOut,
    InclusionProofOut,
    PublicKeyOut,
)

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/events", response_model=AuditPage, summary="Read the audit trail in order")
def list_audit_events(
    actor: Auditor,
    sessions: SessionsDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="return events with seq greater than this")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, object]:
    """Events with ``seq`` above ``after``, at most ``limit``. Page on with ``after=next_after``
    until ``next_after`` is null: every listing is itself audited, so the log grows as it is read
    and paging until an empty page may never end."""
    page = service.read_events(sessions, actor, after, limit)
    return {"events": page, "next_after": page[-1].seq if len(page) == limit else None}


@router.get("/verify", response_model=ChainVerificationOut, summary="Recompute the hash chain")
def verify_audit_chain(actor: Auditor, runtime: RuntimeDep) -> service.Verification:
    """Names the first event whose hash, link or sequence does not match."""
    return service.verify(runtime.sessions, runtime.read_sessions, actor)


@router.get("/public-key", response_model=PublicKeyOut, summary="The log's Ed25519 public key")
def audit_public_key(actor: Auditor, runtime: RuntimeDep) -> PublicKeyOut:
    """Compare it with the key the operator published out of band before trusting it."""
    return PublicKeyOut.of(runtime.signer.verifier)


@router.get(
    "/checkpoint",
    response_model=CheckpointOut,
    summary="The latest signed checkpoint",
    responses={503: refusal("no_checkpoint_yet: just after start; retry in a moment")},
)
def latest_audit_checkpoint(actor: Auditor, sessions: SessionsDep) -> CheckpointOut:
    return CheckpointOut.of(log.latest_checkpoint(sessions))


@router.post("/checkpoint", response_model=CheckpointOut, summary="Sequence every committed event and sign now")
def sign_audit_checkpoint(actor: Auditor, runtime: RuntimeDep) -> CheckpointOut:
    """A checkpoint covering every event committed before the call (signed now if the tree has
    grown since the last one), for a verifier that wants its own reads in it."""
    return CheckpointOut.of(runtime.passes.sequencer.checkpoint_now())


@router.get(
    "/proof/inclusion",
    response_model=InclusionProofOut,
    summary="RFC 9162 inclusion proof of one event",
    responses={
        404: refusal("not_found: no such event, or outside the caller's country"),
        409: refusal("tree_size_out_of_range: the log has not reached tree_size yet"),
    },
)
def audit_inclusion_proof(
    actor: Auditor,
    sessions: SessionsDep,
    seq: Annotated[int, Query(ge=1, le=2**63 - 1, description="the event")],
    tree_size: Annotated[int, Query(ge=1, le=2**63 - 1, description="a checkpoint's tree size")],
) -> InclusionProofOut:
    """422 ``invalid_proof_range`` when ``seq`` is beyond ``tree_size``."""
    return InclusionProofOut.of(log.inclusion(sessions, actor, seq, tree_size))


@router.get(
    "/proof/consistency",
    response_model=ConsistencyProofOut,
    summary="RFC 9162 consistency proof",
    responses={409: refusal("tree_size_out_of_range: the log has not reached `to` yet")},
)
def audit_consistency_proof(
    actor: Auditor,
    sessions: SessionsDep,
    old_size: Annotated[int, Query(alias="from", ge=0, le=2**63 - 1, description="the older tree size")],
    new_size: Annotated[int, Query(alias="to", ge=0, le=2**63 - 1, description="the newer tree size")],
) -> ConsistencyProofOut:
    """422 ``invalid_proof_range`` when ``from`` > ``to``."""
    return ConsistencyProofOut.of(log.consistency(sessions, old_size, new_size))
