from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from app.audit.log import ConsistencyProof, InclusionProof, SignedCheckpoint
from app.audit.notes import Verifier


class AuditEventOut(BaseModel):
    seq: int
    at: datetime
    principal_id: int | None
    role: str | None
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @field_serializer("at")
    def hashed_form(self, at: datetime) -> str:
        """``at`` exactly as it enters the hash, so that exports verify byte for byte."""
        return at.isoformat(timespec="microseconds")


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    next_after: int | None


class ChainVerificationOut(BaseModel):
    """The audit trail's hash chain recomputed (not to be confused with 1:1 ``VerificationOut``)."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None = None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class PublicKeyOut(BaseModel):
    name: str = Field(description="the key's name, also the log's origin: the first line of every checkpoint")
    key_id: str = Field(description="hex of the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)")
    public_key: str = Field(description="base64 of the 32-byte Ed25519 public key")
    verifier_key: str = Field(
        description="C2SP signed-note verifier key, name+keyid+base64(0x01 || public key): what `readmit audit "
        "verify-remote --key` and Go's golang.org/x/mod/sumdb/note take"
    )

    @classmethod
    def of(cls, verifier: Verifier) -> PublicKeyOut:
        return cls(
            name=verifier.name,
            key_id=verifier.key_id.hex(),
            public_key=b64(verifier.public_key),
            verifier_key=str(verifier),
        )


class CheckpointOut(BaseModel):
    tree_size: int
    root_hash: str = Field(description="base64 of the RFC 9162 root of the first tree_size events")
    signed_at: datetime
    checkpoint: str = Field(description="the C2SP tlog-checkpoint signed note, verbatim: what a verifier checks")

    @classmethod
    def of(cls, signed: SignedCheckpoint) -> CheckpointOut:
        return cls(
            tree_size=signed.size,
            root_hash=b64(bytes.fromhex(signed.root)),
            signed_at=signed.signed_at,
            checkpoint=signed.note,
        )


class InclusionProofOut(BaseModel):
    seq: int
    leaf_index: int = Field(description="seq - 1")
    tree_size: int
    leaf_hash: str = Field(description="base64 of SHA-256(0x00 || the event's canonical bytes)")
    hashes: list[str] = Field(description="RFC 9162 inclusion proof, base64, from the leaf's sibling up")

    @classmethod
    def of(cls, proof: InclusionProof) -> InclusionProofOut:
        return cls(
            seq=proof.seq,
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            leaf_hash=b64(proof.leaf_hash),
            hashes=[b64(h) for h in proof.hashes],
        )


class ConsistencyProofOut(BaseModel):
    from_: int = Field(alias="from", description="the older tree size")
    to: int = Field(description="the newer tree size")
    hashes: list[str] = Field(description="RFC 9162 consistency proof, base64")

    @classmethod
    def of(cls, proof: ConsistencyProof) -> ConsistencyProofOut:
        return cls.model_validate(
            {"from": proof.old_size, "to": proof.new_size, "hashes": [b64(h) for h in proof.hashes]}
        )
