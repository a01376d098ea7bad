from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, field_serializer


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
