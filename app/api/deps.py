"""Dependencies every route uses: the runtime, the session factory use cases open their
transactions with, and the calling principal checked against the roles the route allows (one
declaration per route).

Those that do no blocking work are coroutines: FastAPI runs a plain function dependency in its
thread pool, a hand-over that costs more than the dependency itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.errors import Forbidden, Unauthenticated
from app.db.session import Sessions
from app.principals.models import Principal, Role
from app.principals.service import authenticate, cached_principal
from app.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="API key issued by an admin")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_sessions(request: Request) -> Sessions:
    return (await get_runtime(request)).sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]


async def current_principal(
    request: Request, runtime: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller, from the cache of keys in the event loop, or read from the database in the
    thread pool when the cache does not hold the key."""
    address = request.client.host if request.client else "unknown"
    runtime.throttle.check_address(address)
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
        token = credentials.credentials
        principal = cached_principal(runtime.keys, token)
        if principal is None:
            principal = await run_in_threadpool(authenticate, runtime.read_sessions, runtime.keys, token)
    except Unauthenticated:
        runtime.throttle.failed(address)
        raise
    request.state.principal_id = principal.id
    runtime.throttle.hit_principal(principal.id)
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency admitting only principals of ``roles`` (403 otherwise). One level deep, the
    runtime taken from the request: FastAPI resolves every nested dependency on every request,
    and resolution (the body's validation included) was a fifth of the event loop's time per
    identification under cProfile; one level took 0.34 ms of 1.70 rather than 0.39 of 1.94."""
    allowed = {role.value for role in roles}

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        return check_role(await current_principal(request, await get_runtime(request), credentials), allowed)

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]
    return dependency


def check_role(principal: Principal, allowed: set[str]) -> Principal:
    """``principal`` if its role is one of ``allowed``; 403 otherwise."""
    if principal.role not in allowed:
        raise Forbidden(f"role {principal.role} may not call this endpoint")
    return principal


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Registry = Annotated[Principal, Depends(require(Role.REGISTRY))]
BorderPolice = Annotated[Principal, Depends(require(Role.BORDER_POLICE))]
Consular = Annotated[Principal, Depends(require(Role.CONSULAR))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
AdminOrRegistry = Annotated[Principal, Depends(require(Role.ADMIN, Role.REGISTRY))]
RegistryOrConsular = Annotated[Principal, Depends(require(Role.REGISTRY, Role.CONSULAR))]
AdminOrConsular = Annotated[Principal, Depends(require(Role.ADMIN, Role.CONSULAR))]
"""The roles a route admits, one alias per set, as its parameter's type: ``actor: Admin``."""
