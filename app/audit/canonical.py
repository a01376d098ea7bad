"""The bytes an audit event's chain hash and Merkle leaf are over (README, "Audit trail"): one
serialisation, shared by the sequencer that chains events, the tree, the verifiers and the
export, so that a verifier written elsewhere rebuilds exactly what was hashed."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from app.audit.models import AuditEvent

GENESIS_HASH = "0" * 64
"""The first event's ``prev_hash``."""

CANONICAL_FIELDS = ("seq", "at", "principal_id", "role", "action", "resource", "outcome", "details", "prev_hash")


def canonical_json(event: dict[str, Any]) -> bytes:
    """The JSON object of :data:`CANONICAL_FIELDS` (``at`` already a string), keys sorted, no
    spaces, ASCII escapes. An event as the API or the export gives it goes in as it is."""
    return json.dumps(
        {name: event[name] for name in CANONICAL_FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def canonical_event(
    seq: int,
    at: datetime,
    principal_id: int | None,
    role: str | None,
    action: str,
    resource: str,
    outcome: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    return canonical_json(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "principal_id": principal_id,
            "role": role,
            "action": action,
            "resource": resource,
            "outcome": outcome,
            "details": details,
            "prev_hash": prev_hash,
        }
    )


def canonical_bytes(event: AuditEvent) -> bytes:
    return canonical_event(
        event.seq,
        event.at,
        event.principal_id,
        event.role,
        event.action,
        event.resource,
        event.outcome,
        event.details,
        event.prev_hash,
    )
