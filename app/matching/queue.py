"""Expiry of queued work: a search whose case deadline passed ends unrun.

Resuming what a stopped process left queued is a claim (app/matching/leases.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.service import countries_of_cases
from app.db.base import utcnow
from app.matching.leases import PENDING
from app.matching.models import Search, SearchStatus


def expire_queued(session: Session, owner: str) -> list[int]:
    """Expire the pending searches past their deadline that no other live process holds
    (``owner``: this process). One another process holds is left to it: it expires the search
    when its batch comes, or its lease lapses and the search becomes anyone's. Rows a
    concurrent transaction has locked (a claim, an end) are skipped, not waited for."""
    now = utcnow()
    due = list(
        session.scalars(
            select(Search)
            .where(
                Search.status.in_(PENDING),
                Search.deadline <= now,
                or_(Search.lease_owner.is_(None), Search.lease_owner == owner, Search.lease_expires < now),
            )
            .with_for_update(skip_locked=True)
        )
    )
    for search in due:
        expire(session, search, now)
    return [search.id for search in due]


def expire(session: Session, search: Search, now: datetime) -> None:
    """A queued search whose deadline has passed ends unrun: a late answer is no answer."""
    search.status, search.finished_at = SearchStatus.EXPIRED.value, now
    search.lease_owner, search.lease_expires = None, None
    audit.append(
        session,
        None,
        Action.SEARCH_EXPIRE,
        f"case/{search.case_id}/search/{search.id}",
        countries_of_cases(session, [search.case_id])[search.case_id],
        outcome="expired",
        details={"reason": "deadline passed while queued"},
    )
