"""The kinds of refusal a use case can answer with, independent of any front door.

Each domain package declares its own exceptions (``exceptions.py``) as subclasses of these
kinds, each with its stable machine-readable ``code``; codes are part of the API contract, never
rename one. A front door turns a kind into its own language once: app/api/errors.py maps kinds
to HTTP statuses, the review pages render them as pages, the CLI prints the message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A request the service refuses for a reason the caller can act on."""

    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    """Also for resources that exist outside the caller's scope: no existence leak."""

    code = "not_found"


class Conflict(DomainError):
    """The request is valid but the state of what it touches does not allow it."""

    code = "conflict"


class Invalid(DomainError):
    code = "validation_error"


class TooLarge(DomainError):
    """A message over a size limit, refused before it is read."""

    code = "payload_too_large"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int = 60) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A part the request needs is not ready or not reachable; the same request may succeed later."""

    code = "unavailable"


class InvalidCountry(Invalid):
    code = "invalid_country"
