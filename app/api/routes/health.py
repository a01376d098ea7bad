from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.api.deps import RuntimeDep
from app.api.errors import ErrorDetail
from app.db.migrate import is_at_head
from app.db.session import engine_of

router = APIRouter(tags=["health"])


class ReadinessChecks(BaseModel):
    database: bool = Field(description="the database answers")
    migrations: bool = Field(description="its schema is at the latest migration")
    indexes: bool = Field(
        description="every gallery's index is loaded (the message names any the cluster cannot place)"
    )


class ReadinessOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks
    error: ErrorDetail | None = Field(None, description="only when not ready: code not_ready, details the checks")


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema at head, every index loaded",
    responses={
        200: {"model": ReadinessOut, "description": "ready"},
        503: {"model": ReadinessOut, "description": "not ready: the failing checks are false"},
    },
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, bool] = {
        "database": False,
        "migrations": False,
        "indexes": runtime.ready and not runtime.unplaced,
    }
    try:  # on the reading engine: a writer holding SQLite's turn must not hang the probe
        read_engine = engine_of(runtime.read_sessions)
        with read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = True
        checks["migrations"] = is_at_head(runtime.settings, read_engine)
    except Exception:  # any failure to reach the database means not ready
        pass
    ready = all(checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        message = "; ".join(["the service is not ready", *runtime.unplaced])
        body["error"] = {"code": "not_ready", "message": message, "details": checks}
    return JSONResponse(body, status_code=200 if ready else 503)
