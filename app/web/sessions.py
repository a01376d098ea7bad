"""Review page sessions: an officer's API key is exchanged once for a session cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.errors import Forbidden, Unauthenticated
from app.db.base import utcnow
from app.principals.models import Principal, Role
from app.principals.service import authenticate
from app.web.models import WebSession

SESSION_LIFETIME = timedelta(hours=8)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, api_key: str) -> tuple[str, WebSession]:
    """Only live consular principals may sign in; returns the cookie token and the session."""
    try:
        principal = authenticate(session, api_key.strip())
    except Unauthenticated:
        audit.append(session, None, "web.sign_in", "review", outcome="denied", details={"reason": "unknown key"})
        raise
    if principal.role != Role.CONSULAR.value:
        audit.append(session, principal, "web.sign_in", "review", outcome="denied", details={"reason": "role"})
        raise Forbidden("only consular officers sign in to the review pages")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    web = WebSession(
        token_hash=_digest(token),
        principal_id=principal.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    session.add(web)
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    audit.append(session, principal, "web.sign_in", "review")
    return token, web


def resolve(session: Session, token: str | None) -> tuple[Principal, WebSession] | None:
    """The signed-in officer, or None when the cookie is missing, unknown, expired, or its
    principal has been revoked since."""
    if not token:
        return None
    web = session.scalar(select(WebSession).where(WebSession.token_hash == _digest(token)))
    if web is None or web.expires_at <= utcnow():
        return None
    principal = session.get(Principal, web.principal_id)
    if principal is None or principal.revoked_at is not None or principal.role != Role.CONSULAR.value:
        return None
    return principal, web


def csrf_ok(web: WebSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(web.csrf_token.encode(), (submitted or "").encode())


def sign_out(session: Session, principal: Principal, web: WebSession) -> None:
    session.delete(web)
    audit.append(session, principal, "web.sign_out", "review")
