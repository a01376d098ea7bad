"""Cases: a detained person to identify before the legal detention deadline.

Status moves only along ``TRANSITIONS``; every move is audited. A case whose deadline passes is
marked ``expired`` by the scheduler and accepts no new searches.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.cases.models import Case, CaseStatus, LegalBasis
from app.core.countries import check_country
from app.core.errors import Conflict, Invalid, NotFound
from app.db.base import utcnow
from app.principals.models import Principal, Role

TRANSITIONS: dict[CaseStatus, set[CaseStatus]] = {
    CaseStatus.OPEN: {CaseStatus.IDENTIFIED, CaseStatus.UNIDENTIFIED, CaseStatus.EXPIRED, CaseStatus.CLOSED},
    CaseStatus.IDENTIFIED: {CaseStatus.CLOSED},
    CaseStatus.UNIDENTIFIED: {CaseStatus.CLOSED},
    CaseStatus.EXPIRED: {CaseStatus.CLOSED},
    CaseStatus.CLOSED: set(),
}
CLOCK_SKEW = timedelta(minutes=5)


def open_case(
    session: Session,
    actor: Principal,
    external_ref: str,
    detained_at: datetime,
    detention_limit_days: int,
    presumed_countries: list[str],
    legal_basis: LegalBasis,
) -> Case:
    now = utcnow()
    if detained_at > now + CLOCK_SKEW:
        raise Invalid("detained_at is in the future", code="invalid_detention_start")
    deadline = detained_at + timedelta(days=detention_limit_days)
    if deadline <= now:
        raise Conflict(f"the detention deadline {deadline.isoformat()} has passed", code="deadline_passed")
    for country in presumed_countries:
        check_country(country)
    case = Case(
        agency=actor.agency,
        agency_country=actor.country,
        external_ref=external_ref,
        detained_at=detained_at,
        detention_limit_days=detention_limit_days,
        deadline=deadline,
        presumed_countries=sorted(set(presumed_countries)),
        legal_basis=legal_basis.value,
        status=CaseStatus.OPEN.value,
        created_by=actor.id,
        created_at=now,
        status_changed_at=now,
    )
    session.add(case)
    try:
        session.flush()
    except IntegrityError as error:
        raise Conflict(f"case {external_ref} already exists for {actor.agency}", code="duplicate_case") from error
    audit.append(
        session,
        actor,
        "case.open",
        f"case/{case.id}",
        details={"legal_basis": legal_basis.value, "presumed_countries": case.presumed_countries},
    )
    return case


def visible_case(session: Session, actor: Principal, case_id: int, *, for_update: bool = False) -> Case:
    """The case if it belongs to ``actor``'s agency, else 404."""
    query = select(Case).where(Case.id == case_id)
    if for_update:
        query = query.with_for_update()
    case = session.scalar(query)
    if case is None or actor.role != Role.BORDER_POLICE.value or case.agency != actor.agency:
        raise NotFound(f"case {case_id} not found")
    return case


def ensure_searchable(case: Case) -> None:
    if case.deadline <= utcnow():
        raise Conflict("the case's detention deadline has passed", code="deadline_passed")
    if case.status != CaseStatus.OPEN.value:
        raise Conflict(f"the case is {case.status}, not open", code="case_not_open")


def move(session: Session, actor: Principal | None, case: Case, to: CaseStatus, reason: str) -> None:
    current = CaseStatus(case.status)
    if to not in TRANSITIONS[current]:
        raise Conflict(f"a case cannot go from {current.value} to {to.value}", code="invalid_transition")
    case.status = to.value
    case.status_changed_at = utcnow()
    audit.append(
        session, actor, f"case.{to.value}", f"case/{case.id}", details={"from": current.value, "reason": reason}
    )


def expire_due_cases(session: Session) -> list[int]:
    """Mark every open case whose deadline has passed as expired; returns their ids."""
    due = list(
        session.scalars(
            select(Case).where(Case.status == CaseStatus.OPEN.value, Case.deadline <= utcnow()).with_for_update()
        )
    )
    for case in due:
        move(session, None, case, CaseStatus.EXPIRED, "detention deadline passed")
    return [case.id for case in due]
