"""The one place where errors become HTTP responses, all in the API's error shape:
``{"error": {"code": "...", "message": "...", "details": ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS_OF_KIND: dict[type[DomainError], int] = {
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    TooLarge: 413,
    RateLimited: 429,
    Unavailable: 503,
}
"""The HTTP status of each kind of domain error; any other domain error is a 400."""


def status_of(error: DomainError) -> int:
    return next((status for kind, status in STATUS_OF_KIND.items() if isinstance(error, kind)), 400)


def headers_of(error: DomainError) -> dict[str, str] | None:
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(error, RateLimited):
        return {"Retry-After": str(error.retry_after_s)}
    return None


HTTP_CODES = {
    400: "invalid_body",  # FastAPI's refusal of a body it cannot parse (not UTF-8)
    404: "not_found",
    405: "method_not_allowed",
    401: "unauthenticated",
    413: "payload_too_large",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable, snake_case: branch on this", examples=["invalid_template"])
    message: str = Field(description="for people: what was refused and why")
    details: Any = Field(
        description="null, or more about the refusal: for validation_error the list of {loc, msg, type}; for "
        "rate_limited {retry_after_s}"
    )


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        return error_response(status_of(error), error.code, error.message, error.details, headers_of(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
            for item in error.errors()
        ]
        if any(item["type"] == "json_invalid" for item in details):  # not a request of any schema
            return error_response(400, "invalid_body", "the body is not valid JSON", details)
        return error_response(422, "validation_error", "the request does not match the schema", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "http_error")
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(error.status_code, code, str(error.detail), None, headers)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, error: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", type(error.orig).__name__ if error.orig else "unknown")
        return error_response(503, "database_unavailable", "the database cannot be reached; retry later")

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, error: DBAPIError) -> JSONResponse:
        log.error("database error: %s", type(error.orig).__name__ if error.orig else "unknown")
        return error_response(500, "internal_error", "the request could not be completed")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the request could not be completed")


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path is served with. Starlette's 405 names only those of the
    first route matching the path, and GET and POST on one path are two routes."""
    routes = request.app.router.routes
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
