"""Retention: probe templates of cases that are over are erased after a set period.

A probe is the biometric data of a detained person; once the case is closed or expired it has
served its purpose. After ``retention_days`` the probe bytes are deleted from their searches;
the searches, candidates, decisions and the audit trail stay, so that who saw what can still be
shown, but the biometric data itself is gone.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseStatus
from app.cases.service import touched_countries
from app.db.base import utcnow
from app.matching.models import Search

ENDED = (CaseStatus.CLOSED.value, CaseStatus.EXPIRED.value)


def erase_old_probes(session: Session, retention_days: int) -> int:
    """Erase the probes of searches of cases ended more than ``retention_days`` ago; returns how
    many searches lost their probes. One audit event per case."""
    cutoff = utcnow() - timedelta(days=retention_days)
    rows = session.execute(
        select(Search, Case)
        .join(Case, Case.id == Search.case_id)
        .where(Case.status.in_(ENDED), Case.status_changed_at <= cutoff, Search.probes.is_not(None))
        .with_for_update()
    ).all()
    by_case: dict[int, list[int]] = {}
    cases = {}
    for search, case in rows:
        search.probes = None
        by_case.setdefault(case.id, []).append(search.id)
        cases[case.id] = case
    for case_id, search_ids in by_case.items():
        audit.append(
            session,
            None,
            Action.PROBE_ERASE,
            f"case/{case_id}",
            touched_countries(cases[case_id]),
            details={"searches": search_ids, "retention_days": retention_days},
        )
    return len(rows)
