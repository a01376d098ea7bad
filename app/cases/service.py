"""Cases: a detained person to identify before the legal detention deadline.

Status moves only along ``TRANSITIONS``; every move is audited. A case whose deadline passes is
marked ``expired`` by the expiry pass and accepts no new searches.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar, cast

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.exceptions import (
    CaseNotOpen,
    DeadlinePassed,
    DuplicateCase,
    InvalidDetentionStart,
    InvalidTransition,
    UnknownCase,
)
from app.cases.models import Case, CaseStatus, LegalBasis
from app.core.countries import check_country
from app.db.base import utcnow
from app.db.session import Sessions, insert, transaction
from app.matching.views import CaseView, case_view
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
    sessions: Sessions,
    actor: Principal,
    external_ref: str,
    detained_at: datetime,
    detention_limit_days: int,
    presumed_countries: list[str],
    legal_basis: LegalBasis,
) -> CaseView:
    """The deadline is ``detained_at`` + ``detention_limit_days``; a deadline already passed is
    refused. The case is visible to the actor's agency only."""
    now = utcnow()
    if detained_at > now + CLOCK_SKEW:
        raise InvalidDetentionStart("detained_at is in the future")
    deadline = detained_at + timedelta(days=detention_limit_days)
    if deadline <= now:
        raise DeadlinePassed(f"the detention deadline {deadline.isoformat()} has passed")
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
    with transaction(sessions) as session:
        insert(session, case, on_conflict=DuplicateCase(f"case {external_ref} already exists for {actor.agency}"))
        audit.append(
            session,
            actor,
            Action.CASE_OPEN,
            f"case/{case.id}",
            touched_countries(case),
            details={"legal_basis": legal_basis.value, "presumed_countries": case.presumed_countries},
        )
        return case_view(session, case)


def remote_case(
    session: Session, peer: Principal, reference: str, deadline: datetime, country: str, legal_basis: str
) -> Case:
    """The case a peer node's search is run under here, in the caller's transaction: found by the
    pseudonymous reference the peer gave, or opened for it (agency ``peer.agency``, presumed
    country this node's own, the deadline and legal basis the peer sent). It holds nothing of the
    receiving state's case file; ``detained_at`` is when this node first heard of it."""
    case = session.scalar(select(Case).where(Case.agency == peer.agency, Case.external_ref == reference))
    if case is not None:
        return case
    now = utcnow()
    if deadline <= now:
        raise DeadlinePassed(f"the detention deadline {deadline.isoformat()} has passed")
    case = Case(
        agency=peer.agency,
        agency_country=peer.country,
        external_ref=reference,
        detained_at=now,
        detention_limit_days=max(1, -(-(deadline - now) // timedelta(days=1))),
        deadline=deadline,
        presumed_countries=[country],
        legal_basis=LegalBasis(legal_basis).value,
        status=CaseStatus.OPEN.value,
        created_by=peer.id,
        created_at=now,
        status_changed_at=now,
    )
    insert(session, case)
    audit.append(
        session,
        peer,
        Action.CASE_OPEN,
        f"case/{case.id}",
        touched_countries(case),
        details={"legal_basis": case.legal_basis, "presumed_countries": case.presumed_countries, "remote": True},
    )
    return case


def read_case(sessions: Sessions, actor: Principal, case_id: int) -> CaseView:
    """The case with its searches and candidate states; the read is audited."""
    with transaction(sessions) as session:
        case = visible_case(session, actor, case_id)
        view = case_view(session, case)
        audit.append(session, actor, Action.CASE_READ, f"case/{case_id}", touched_countries(case))
    return view


def change_status(sessions: Sessions, actor: Principal, case_id: int, to: CaseStatus) -> CaseView:
    """The agency closes its case, or marks it unidentified."""
    with transaction(sessions) as session:
        case = visible_case(session, actor, case_id, for_update=True)
        move(session, actor, case, to, "requested by the agency")
        return case_view(session, case)


def visible_case(session: Session, actor: Principal, case_id: int, *, for_update: bool = False) -> Case:
    """The case if it belongs to ``actor``'s agency, else 404."""
    query = select(Case).where(Case.id == case_id)
    if for_update:
        query = query.with_for_update()
    return visible_to(session.scalar(query), actor, case_id)


class CaseTerms(Protocol):
    """What a search needs of its case: a Case, or a row of these columns."""

    @property
    def id(self) -> int: ...
    @property
    def agency(self) -> str: ...
    @property
    def agency_country(self) -> str: ...
    @property
    def deadline(self) -> datetime: ...
    @property
    def presumed_countries(self) -> list[str]: ...
    @property
    def status(self) -> str: ...


def case_terms(session: Session, case_id: int) -> CaseTerms | None:
    """The case's terms, whoever asks (see :func:`visible_to`): one Core query, as every
    identification not served from the cache of terms runs it (app/matching/terms.py)."""
    return cast(CaseTerms | None, session.connection().execute(_TERMS, {"case_id": case_id}).one_or_none())


_TERMS = select(Case.id, Case.agency, Case.agency_country, Case.deadline, Case.presumed_countries, Case.status).where(
    Case.id == bindparam("case_id")
)

Visible = TypeVar("Visible", bound=CaseTerms)


def visible_to(case: Visible | None, actor: Principal, case_id: int) -> Visible:
    """The case if it belongs to ``actor``'s agency, else 404."""
    if case is None or not owns(actor, case):
        raise UnknownCase(f"case {case_id} not found")
    return case


def owns(actor: Principal, case: Visible) -> bool:
    """Whether ``case`` is one of ``actor``'s agency's cases."""
    return actor.role == Role.BORDER_POLICE.value and case.agency == actor.agency


def touched_countries(case: CaseTerms) -> list[str]:
    """The countries a case's events touch: the receiving state's and every presumed country of
    origin, whose auditors each see the case and its searches (a verification against one
    record touches the receiving state's and that record's country only)."""
    return [case.agency_country, *case.presumed_countries]


def countries_of_cases(session: Session, case_ids: Iterable[int]) -> dict[int, list[str]]:
    """:func:`touched_countries` of several cases in one query."""
    rows = session.execute(
        select(Case.id, Case.agency_country, Case.presumed_countries).where(Case.id.in_(sorted(set(case_ids))))
    )
    return {row.id: [row.agency_country, *row.presumed_countries] for row in rows}


def ensure_open(case: CaseTerms) -> None:
    """A case takes searches and decisions only while open and before its deadline."""
    if case.deadline <= utcnow():
        raise DeadlinePassed("the case's detention deadline has passed")
    if case.status != CaseStatus.OPEN.value:
        raise CaseNotOpen(f"the case is {case.status}, not open")


def move(session: Session, actor: Principal | None, case: Case, to: CaseStatus, reason: str) -> None:
    current = CaseStatus(case.status)
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"a case cannot go from {current.value} to {to.value}")
    case.status = to.value
    case.status_changed_at = utcnow()
    audit.append(
        session,
        actor,
        Action.CASE_TRANSITION,
        f"case/{case.id}",
        touched_countries(case),
        details={"from": current.value, "to": to.value, "reason": reason},
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
