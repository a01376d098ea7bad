"""The database side of the search queue: what survives a restart, and expiry of queued work."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.service import countries_of_cases
from app.db.base import utcnow
from app.db.session import transaction
from app.matching.models import Search, SearchStatus


def requeue_pending(sessions: sessionmaker[Session]) -> list[tuple[int, datetime, tuple[int, ...]]]:
    """Searches queued or running when the last process stopped, set back to queued, as
    (id, deadline, galleries) for the scheduler."""
    with transaction(sessions) as session:
        pending = list(
            session.scalars(
                select(Search)
                .where(Search.status.in_([SearchStatus.QUEUED.value, SearchStatus.RUNNING.value]))
                .with_for_update()
            )
        )
        for search in pending:
            search.status, search.started_at = SearchStatus.QUEUED.value, None
        return [(s.id, s.deadline, tuple(sorted(s.searched_galleries))) for s in pending]


def expire_queued(session: Session) -> list[int]:
    now = utcnow()
    due = list(
        session.scalars(
            select(Search).where(Search.status == SearchStatus.QUEUED.value, Search.deadline <= now).with_for_update()
        )
    )
    for search in due:
        expire(session, search, now)
    return [search.id for search in due]


def expire(session: Session, search: Search, now: datetime) -> None:
    """A queued search whose deadline has passed ends unrun: a late answer is no answer."""
    search.status, search.finished_at = SearchStatus.EXPIRED.value, now
    audit.append(
        session,
        None,
        Action.SEARCH_EXPIRE,
        f"case/{search.case_id}/search/{search.id}",
        countries_of_cases(session, [search.case_id])[search.case_id],
        outcome="expired",
        details={"reason": "deadline passed while queued"},
    )
