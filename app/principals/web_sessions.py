"""Review page sessions: a consular officer's API key is exchanged once for a session, which the
review pages keep in a cookie; sign-in, its refusals and sign-out are audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.core.errors import Forbidden
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.principals.exceptions import UnknownKey
from app.principals.models import Principal, Role, WebSession
from app.principals.service import principal_for_key

SESSION_LIFETIME = timedelta(hours=8)


class NotConsular(Forbidden):
    code = "forbidden"


@dataclass(frozen=True)
class SignedIn:
    officer: Principal
    token_hash: str
    csrf_token: str

    def csrf_ok(self, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(self.csrf_token.encode(), (submitted or "").encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(sessions: Sessions, api_key: str) -> str:
    """Only live consular principals may sign in; returns the cookie's token. Refusals are
    audited too: they are how a stolen key shows up."""
    with transaction(sessions) as session:
        try:
            principal = principal_for_key(session, api_key.strip())
        except UnknownKey:
            audit.append(
                session, None, Action.SESSION_SIGN_IN, "review", (), outcome="denied", details={"reason": "unknown key"}
            )
            refusal: Exception = UnknownKey("unknown or revoked API key")
        else:
            if principal.role == Role.CONSULAR.value:
                return _open(session, principal)
            audit.append(
                session, principal, Action.SESSION_SIGN_IN, "review", (), outcome="denied", details={"reason": "role"}
            )
            refusal = NotConsular("only consular officers sign in to the review pages")
    raise refusal


def _open(session: Session, principal: Principal) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            token_hash=_digest(token),
            principal_id=principal.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    audit.append(session, principal, Action.SESSION_SIGN_IN, "review", ())
    return token


def resolve(sessions: Sessions, token: str | None) -> SignedIn | None:
    """The signed-in officer, or None when the cookie is missing, unknown, expired, or its
    principal has been revoked since."""
    if not token:
        return None
    with sessions() as session:
        web = session.scalar(select(WebSession).where(WebSession.token_hash == _digest(token)))
        if web is None or web.expires_at <= utcnow():
            return None
        principal = session.get(Principal, web.principal_id)
        if principal is None or principal.revoked_at is not None or principal.role != Role.CONSULAR.value:
            return None
        return SignedIn(principal, web.token_hash, web.csrf_token)


def sign_out(sessions: Sessions, signed_in: SignedIn) -> None:
    with transaction(sessions) as session:
        session.execute(delete(WebSession).where(WebSession.token_hash == signed_in.token_hash))
        audit.append(session, signed_in.officer, Action.SESSION_SIGN_OUT, "review", ())
