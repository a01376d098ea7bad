"""Principals: creation with a key shown once, revocation, and authentication of a bearer key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.cache import CommittedRowsCache, NotCached
from app.core.countries import check_country
from app.db.base import utcnow
from app.db.session import Sessions, insert, transaction
from app.principals.exceptions import MissingAgency, MissingCountry, UnknownKey, UnknownPrincipal
from app.principals.keys import hash_key, issue_key, key_matches, prefix_of
from app.principals.models import Principal, Role

_DUMMY_DIGEST = "0" * 64
NEEDS_COUNTRY = {Role.REGISTRY, Role.CONSULAR, Role.BORDER_POLICE}


def create_principal(
    sessions: Sessions,
    actor: Principal | None,
    name: str,
    role: Role,
    country: str | None = None,
    agency: str | None = None,
) -> tuple[Principal, str]:
    """Create a principal; returns it with its API key, which is not stored and cannot be shown
    again. Registry, consular and border police principals need a country; border police also
    an agency. ``actor`` None is the operator on the command line (the first admin key)."""
    if role in NEEDS_COUNTRY and not country:
        raise MissingCountry(f"a {role.value} principal needs a country")
    if role is Role.BORDER_POLICE and not agency:
        raise MissingAgency("a border_police principal needs an agency")
    if country:
        check_country(country)
    with transaction(sessions) as session:
        return add_principal(session, actor, name, role, country, agency)


def add_principal(
    session: Session, actor: Principal | None, name: str, role: Role, country: str | None, agency: str | None
) -> tuple[Principal, str]:
    """:func:`create_principal`'s insert and audit, in the caller's transaction (a federation
    peer and the principal it acts as are created together)."""
    key = issue_key()
    principal = Principal(
        name=name,
        role=role.value,
        country=country,
        agency=agency if role is Role.BORDER_POLICE else None,
        key_prefix=key.prefix,
        key_hash=key.digest,
    )
    insert(session, principal)
    audit.append(
        session,
        actor,
        Action.PRINCIPAL_CREATE,
        f"principal/{principal.id}",
        [country],
        details={"role": role.value, "country": country, "agency": principal.agency},
    )
    return principal, key.token


def revoke_principal(sessions: Sessions, actor: Principal, principal_id: int) -> None:
    """The key stops working at once: its commit empties the cache of keys
    (app/principals/key_cache.py)."""
    with transaction(sessions) as session:
        principal = session.get(Principal, principal_id)
        if principal is None or principal.revoked_at is not None:
            raise UnknownPrincipal(f"principal {principal_id} not found")
        revoke(session, actor, principal)


def revoke(session: Session, actor: Principal | None, principal: Principal) -> None:
    """:func:`revoke_principal` in the caller's transaction."""
    principal.revoked_at = utcnow()
    audit.append(session, actor, Action.PRINCIPAL_REVOKE, f"principal/{principal.id}", [principal.country])


def cached_principal(keys: CommittedRowsCache, token: str) -> Principal | None:
    """The principal holding ``token`` if the cache of keys has it: no database read, so an
    event loop may ask without blocking."""
    try:
        principal: Principal = keys.get(hash_key(token))
    except NotCached:
        return None
    return principal


def authenticate(sessions: Sessions, keys: CommittedRowsCache, token: str) -> Principal:
    """The live principal holding ``token``, which :func:`cached_principal` did not find: read
    without a write transaction (every request checks its key, beside the writers), and kept
    unless a principal changed meanwhile; see :func:`principal_for_key`."""
    generation = keys.generation
    with sessions() as session:
        principal = principal_for_key(session, token)
    keys.put(hash_key(token), principal, generation)
    return principal


def principal_for_key(session: Session, token: str) -> Principal:
    """The live principal holding ``token``; raises UnknownKey for unknown, malformed or
    revoked keys (checked on every request, so revocation takes effect at once)."""
    prefix = prefix_of(token)
    principal = None
    if prefix is not None:
        principal = session.scalar(select(Principal).where(Principal.key_prefix == prefix))
    # Compare against a dummy digest when no row matched, so timing does not reveal prefixes.
    matches = key_matches(token, principal.key_hash if principal else _DUMMY_DIGEST)
    if principal is None or not matches or principal.revoked_at is not None:
        raise UnknownKey("unknown or revoked API key")
    return principal


def list_principals(sessions: Sessions) -> list[Principal]:
    with sessions() as session:
        return list(session.scalars(select(Principal).order_by(Principal.id)))
