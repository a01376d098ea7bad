"""The remote parts of searches as the requesting agency sees them, for the search and case
views (app/matching/views.py): per peer country, its status and the candidates it reported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.federation.models import OutboundSearch, RemoteCandidate

PENDING = {"sending", "queued", "running"}
SKIPPED_REASONS = {"peer_unavailable"}


@dataclass(frozen=True)
class RemoteCandidateView:
    id: int
    reference_id: str
    rank: int
    score: float
    band: str
    review_state: str
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class RemoteSearchView:
    country: str
    status: str
    error: str | None
    retry: bool
    candidates: list[RemoteCandidateView]


def remote_searches_of(session: Session, search_ids: list[int]) -> dict[int, list[RemoteSearchView]]:
    if not search_ids:
        return {}
    outbound = list(
        session.scalars(
            select(OutboundSearch).where(OutboundSearch.search_id.in_(search_ids)).order_by(OutboundSearch.id)
        )
    )
    if not outbound:
        return {}
    candidates: dict[int, list[RemoteCandidateView]] = {}
    for row in session.scalars(
        select(RemoteCandidate)
        .where(RemoteCandidate.outbound_search_id.in_([o.id for o in outbound]))
        .order_by(RemoteCandidate.rank)
    ):
        candidates.setdefault(row.outbound_search_id, []).append(
            RemoteCandidateView(
                row.origin_candidate_id,
                row.reference_id,
                row.rank,
                row.score,
                row.band,
                row.review_state,
                row.attributes if row.review_state == "confirmed" else None,
            )
        )
    views: dict[int, list[RemoteSearchView]] = {}
    for o in outbound:
        views.setdefault(o.search_id, []).append(
            RemoteSearchView(o.country, o.status, o.error, o.retry, candidates.get(o.id, []))
        )
    return views


def with_remote(status: str, skipped: list[dict[str, str]], remote: list[RemoteSearchView]) -> tuple[str, list]:
    """The search's status and skipped countries once its remote parts are counted: a country
    sent to a peer is no longer skipped for want of a gallery, but for its peer's refusal or
    unavailability; a search done here whose peers have not answered yet is still running."""
    if not remote:
        return status, skipped
    sent = {r.country for r in remote}
    kept = [entry for entry in skipped if entry["country"] not in sent]
    for r in remote:
        if r.error in SKIPPED_REASONS or r.status in ("refused", "unavailable"):
            kept.append({"country": r.country, "reason": r.error or "peer_unavailable"})
    waiting = any(r.status in PENDING and r.error is None for r in remote)
    return ("running" if status == "done" and waiting else status), kept
