"""Data-sharing agreements: which receiving state may search which country's galleries, when."""

from __future__ import annotations

from datetime import date

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.agreements.exceptions import InvalidAgreement
from app.agreements.models import Agreement, in_force
from app.audit import service as audit
from app.audit.actions import Action
from app.core.countries import check_country
from app.db.session import Sessions, insert, transaction
from app.principals.models import Principal


def create_agreement(
    sessions: Sessions,
    actor: Principal,
    receiving_country: str,
    origin_country: str,
    modalities: list[str],
    valid_from: date,
    valid_to: date | None,
) -> Agreement:
    check_country(receiving_country)
    check_country(origin_country)
    if receiving_country == origin_country:
        raise InvalidAgreement("an agreement joins two different countries")
    if valid_to is not None and valid_to < valid_from:
        raise InvalidAgreement("valid_to is before valid_from")
    if not modalities:
        raise InvalidAgreement("an agreement covers at least one modality")
    agreement = Agreement(
        receiving_country=receiving_country,
        origin_country=origin_country,
        modalities=sorted(set(modalities)),
        valid_from=valid_from,
        valid_to=valid_to,
        created_by=actor.id,
    )
    with transaction(sessions) as session:
        insert(session, agreement)
        audit.append(
            session,
            actor,
            Action.AGREEMENT_CREATE,
            f"agreement/{agreement.id}",
            [receiving_country, origin_country],
            details={"receiving_country": receiving_country, "origin_country": origin_country},
        )
    return agreement


def list_agreements(sessions: Sessions) -> list[Agreement]:
    with sessions() as session:
        return list(session.scalars(select(Agreement).order_by(Agreement.id)))


def countries_in_force(
    session: Session, receiving_country: str, origin_countries: list[str], modality: str, day: date
) -> set[str]:
    """The origin countries whose galleries of ``modality`` the receiving country may search on
    ``day``: one Core query for them all (it runs on every identification)."""
    terms = session.connection().execute(
        _TERMS_BETWEEN, {"receiving": receiving_country, "origins": list(origin_countries)}
    )
    return {row.origin_country for row in terms if in_force(row, modality, day)}


_TERMS_BETWEEN = select(Agreement.origin_country, Agreement.modalities, Agreement.valid_from, Agreement.valid_to).where(
    Agreement.receiving_country == bindparam("receiving"),
    Agreement.origin_country.in_(bindparam("origins", expanding=True)),
)
