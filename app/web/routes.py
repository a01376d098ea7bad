"""The consular review pages: server-rendered, no script, usable offline and by keyboard.

Officers sign in with their API key once, exchanged for an HttpOnly, SameSite=Strict session
cookie (Secure over HTTPS); every form carries a CSRF token. Reads and decisions call the same
use cases, and so leave the same audit trail, as the API.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.api.deps import RuntimeDep
from app.api.errors import status_of
from app.core.errors import DomainError, Invalid, RateLimited
from app.core.ids import RowId
from app.db.base import utcnow
from app.galleries.service import list_galleries
from app.matching.models import ReviewState
from app.principals import web_sessions as sessions
from app.principals.web_sessions import SignedIn
from app.review import service as review

SESSION_COOKIE = "readmit_session"
LOGIN_CSRF_COOKIE = "readmit_login_csrf"
URGENT_SECONDS = 72 * 3600
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def time_left(deadline: datetime) -> str:
    seconds = int((deadline - utcnow()).total_seconds())
    if seconds <= 0:
        return "deadline passed"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days} d {hours} h left" if days else f"{hours} h {seconds % 3600 // 60} min left"


templates.env.globals["time_left"] = time_left
templates.env.globals["URGENT_SECONDS"] = URGENT_SECONDS
templates.env.globals["now"] = utcnow


class NotSignedIn(Exception):
    """No live officer session: the page sends the browser to the sign-in form."""


class ExpiredForm(DomainError):
    code = "expired_form"


class InvalidDecision(Invalid):
    code = "invalid_decision"


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", status, message=message)


class PageRoute(APIRoute):
    """Every review page answers refusals as a page (or a redirect to sign in), never as the
    API's JSON: the one place where domain errors become HTML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except NotSignedIn:
                return RedirectResponse("/review/sign-in", status_code=303)
            except ExpiredForm as error:
                return _error(request, 403, error.message)
            except DomainError as error:
                return _error(request, status_of(error), error.message)

        return page_handler


router = APIRouter(prefix="/review", include_in_schema=False, route_class=PageRoute)


def current_officer(request: Request, runtime: RuntimeDep) -> SignedIn:
    signed_in = sessions.resolve(runtime.sessions, request.cookies.get(SESSION_COOKIE))
    if signed_in is None:
        raise NotSignedIn
    return signed_in


Officer = Annotated[SignedIn, Depends(current_officer)]


def _check_csrf(signed_in: SignedIn, csrf: str) -> None:
    if not signed_in.csrf_ok(csrf):
        raise ExpiredForm("This form has expired. Reload the page and try again.")


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


def _sign_in_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = _page(request, "sign_in.html", status, csrf=token, error=error)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, 1800)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_form(request)


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request, runtime: RuntimeDep, api_key: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        raise ExpiredForm("This form has expired. Open the sign-in page again.")
    address = request.client.host if request.client else "unknown"
    try:
        runtime.throttle.check_address(address)
    except RateLimited as error:
        raise RateLimited(
            "Too many failed sign-ins from this computer. Wait a minute and retry.", retry_after_s=error.retry_after_s
        ) from error
    try:
        token = sessions.sign_in(runtime.sessions, api_key)
    except DomainError as error:
        runtime.throttle.failed(address)
        return _sign_in_form(
            request, status_of(error), "This key cannot sign in here. Only consular officers' keys can."
        )
    redirect = RedirectResponse("/review", status_code=303)
    _set_cookie(request, redirect, SESSION_COOKIE, token, int(sessions.SESSION_LIFETIME.total_seconds()))
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/review")
    return redirect


@router.post("/sign-out")
def sign_out(request: Request, runtime: RuntimeDep, csrf: Annotated[str, Form()] = "") -> Response:
    signed_in = sessions.resolve(runtime.sessions, request.cookies.get(SESSION_COOKIE))
    if signed_in is not None:
        _check_csrf(signed_in, csrf)
        sessions.sign_out(runtime.sessions, signed_in)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


@router.get("", response_class=HTMLResponse)
def queue(
    request: Request, runtime: RuntimeDep, signed_in: Officer, state: str = "pending", gallery_id: str = ""
) -> Response:
    try:
        wanted = ReviewState(state)
    except ValueError:
        return _error(request, 400, f"Unknown state {state!r}.")
    gallery = int(gallery_id) if gallery_id.isdigit() else None
    officer = signed_in.officer
    return _page(
        request,
        "queue.html",
        officer=officer,
        csrf=signed_in.csrf_token,
        items=review.review_queue(runtime.sessions, officer, wanted, gallery),
        state=wanted.value,
        gallery_id=gallery,
        galleries=list_galleries(runtime.read_sessions, runtime.registry, officer),
        states=[s.value for s in ReviewState],
    )


@router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate(request: Request, runtime: RuntimeDep, signed_in: Officer, candidate_id: RowId) -> Response:
    page = review.candidate_page(runtime.sessions, signed_in.officer, candidate_id)
    return _page(request, "candidate.html", officer=signed_in.officer, csrf=signed_in.csrf_token, **page.__dict__)


@router.post("/candidates/{candidate_id}/decision")
def decide(
    runtime: RuntimeDep,
    signed_in: Officer,
    candidate_id: RowId,
    decision: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(signed_in, csrf)
    if decision not in set(review.Decision) or not note.strip():
        raise InvalidDecision("Choose Confirm, Reject or Inconclusive and write a note explaining the decision.")
    if "\x00" in note:  # as the API refuses it (app/core/text.py)
        raise InvalidDecision("The note cannot hold a NUL character.")
    review.decide(runtime.sessions, signed_in.officer, candidate_id, review.Decision(decision), note.strip()[:2000])
    following = review.next_pending(runtime.sessions, signed_in.officer)
    return RedirectResponse(f"/review/candidates/{following}" if following else "/review", status_code=303)
