from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import RuntimeDep, bearer, check_role, current_principal
from app.principals.models import Role

router = APIRouter(tags=["operations"])


async def scrape_allowed(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The configured scrape token (READMIT_METRICS_TOKEN), or an admin key."""
    token = runtime.settings.metrics_token
    if token and credentials is not None and hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        return
    check_role(await current_principal(request, runtime, credentials), {Role.ADMIN.value})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(scrape_allowed)],
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
