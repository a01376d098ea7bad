"""The consular review pages: server-rendered, no script, usable offline and by keyboard.

Officers sign in with their API key once, exchanged for an HttpOnly, SameSite=Strict session
cookie (Secure over HTTPS); every form carries a CSRF token. Reads and decisions go through the
same services, and so the same audit trail, as the API.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.core.errors import DomainError
from app.core.ids import RowId
from app.db.base import utcnow
from app.galleries.service import list_galleries
from app.matching.models import ReviewState
from app.principals.models import Principal
from app.review import service as review
from app.web import sessions
from app.web.models import WebSession

router = APIRouter(prefix="/review", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
SESSION_COOKIE = "readmit_session"
LOGIN_CSRF_COOKIE = "readmit_login_csrf"
URGENT_SECONDS = 72 * 3600


def time_left(deadline: datetime) -> str:
    seconds = int((deadline - utcnow()).total_seconds())
    if seconds <= 0:
        return "deadline passed"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days} d {hours} h left" if days else f"{hours} h {seconds % 3600 // 60} min left"


templates.env.globals["time_left"] = time_left
templates.env.globals["URGENT_SECONDS"] = URGENT_SECONDS
templates.env.globals["now"] = utcnow


def _sessions(request: Request) -> Session:
    session: Session = request.app.state.runtime.sessions()
    return session


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", status, message=message)


def _signed_in(request: Request, db: Session) -> tuple[Principal, WebSession] | None:
    return sessions.resolve(db, request.cookies.get(SESSION_COOKIE))


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/review",
    )


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = _page(request, "sign_in.html", csrf=token, error=None)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, 1800)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(request: Request, api_key: Annotated[str, Form()], csrf: Annotated[str, Form()] = "") -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return _error(request, 403, "This form has expired. Open the sign-in page again.")
    throttle = request.app.state.runtime.throttle
    address = request.client.host if request.client else "unknown"
    try:
        throttle.check_address(address)
    except DomainError as error:
        return _error(request, error.status, "Too many failed sign-ins from this computer. Wait a minute and retry.")
    with _sessions(request) as db, db.begin():
        failure: DomainError | None = None
        try:
            token, _ = sessions.sign_in(db, api_key)
        except DomainError as error:
            failure = error
    if failure is not None:
        throttle.failed(address)
        fresh = secrets.token_urlsafe(32)
        response = _page(
            request,
            "sign_in.html",
            401 if failure.status == 401 else 403,
            csrf=fresh,
            error="This key cannot sign in here. Only consular officers' keys can.",
        )
        _set_cookie(request, response, LOGIN_CSRF_COOKIE, fresh, 1800)
        return response
    redirect = RedirectResponse("/review", status_code=303)
    _set_cookie(request, redirect, SESSION_COOKIE, token, int(sessions.SESSION_LIFETIME.total_seconds()))
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/review")
    return redirect


@router.post("/sign-out")
def sign_out(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    with _sessions(request) as db, db.begin():
        current = _signed_in(request, db)
        if current is not None:
            if not sessions.csrf_ok(current[1], csrf):
                return _error(request, 403, "This form has expired. Reload the page and try again.")
            sessions.sign_out(db, *current)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


@router.get("", response_class=HTMLResponse)
def queue(request: Request, state: str = "pending", gallery_id: str = "") -> Response:
    with _sessions(request) as db, db.begin():
        current = _signed_in(request, db)
        if current is None:
            return RedirectResponse("/review/sign-in", status_code=303)
        officer, web = current
        try:
            wanted = ReviewState(state)
        except ValueError:
            return _error(request, 400, f"Unknown state {state!r}.")
        gallery = int(gallery_id) if gallery_id.isdigit() else None
        items = review.review_queue(db, officer, wanted, gallery)
        galleries = list_galleries(db, officer)
        return _page(
            request,
            "queue.html",
            officer=officer,
            csrf=web.csrf_token,
            items=items,
            state=wanted.value,
            gallery_id=gallery,
            galleries=galleries,
            states=[s.value for s in ReviewState],
        )


@router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate(request: Request, candidate_id: RowId) -> Response:
    with _sessions(request) as db, db.begin():
        current = _signed_in(request, db)
        if current is None:
            return RedirectResponse("/review/sign-in", status_code=303)
        officer, web = current
        try:
            page = review.candidate_page(db, officer, candidate_id)
        except DomainError as error:
            return _error(request, error.status, error.message)
        return _page(request, "candidate.html", officer=officer, csrf=web.csrf_token, **page)


@router.post("/candidates/{candidate_id}/decision")
def decide(
    request: Request,
    candidate_id: RowId,
    decision: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    with _sessions(request) as db, db.begin():
        current = _signed_in(request, db)
        if current is None:
            return RedirectResponse("/review/sign-in", status_code=303)
        officer, web = current
        if not sessions.csrf_ok(web, csrf):
            return _error(request, 403, "This form has expired. Reload the page and decide again.")
        if decision not in ("confirmed", "rejected") or not note.strip():
            return _error(request, 422, "Choose Confirm or Reject and write a note explaining the decision.")
        try:
            review.decide(db, officer, candidate_id, decision == "confirmed", note.strip()[:2000])
        except DomainError as error:
            return _error(request, error.status, error.message)
        following = review.next_pending(db, officer)
    target = f"/review/candidates/{following}" if following else "/review"
    return RedirectResponse(target, status_code=303)
