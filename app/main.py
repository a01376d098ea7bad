"""The FastAPI application: routes, error handlers, limits, and the runtime's start and stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.api.errors import install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.openapi import install_openapi, operation_id
from app.api.routes import (
    agreements,
    audit,
    cases,
    deduplication,
    federation,
    galleries,
    health,
    metrics,
    node,
    peers,
    principals,
    review,
    review_policies,
    searches,
)
from app.core.config import Settings, get_settings
from app.core.datalock import lock_for_serving, supervised
from app.core.errors import DomainError
from app.core.processes import end_with_parent
from app.db.locks import database_lock
from app.db.migrate import upgrade_to_head
from app.observability.middleware import RequestContext
from app.runtime import Runtime
from app.web import routes as web
from app.web.headers import SecurityHeaders
from matcher.tuning import keep_a_core_for_the_interpreter

log = logging.getLogger(__name__)

DESCRIPTION = """
Biometric identification matching for the return and readmission of irregular migrants.

Every endpoint except `/healthz` and `/readyz` needs `Authorization: Bearer <api key>`. Errors
always have the body `{"error": {"code", "message", "details"}}`; resources outside the
caller's country or agency answer 404, not 403.
"""


TAGS = [
    {"name": "health", "description": "Liveness and readiness, without an API key."},
    {"name": "operations", "description": "Prometheus metrics."},
    {"name": "principals", "description": "API keys: who may call, in which role, for which country or agency."},
    {
        "name": "agreements",
        "description": "Which state may search which country's galleries, for which modalities.",
    },
    {"name": "galleries", "description": "A country of origin's registry: galleries and their records."},
    {"name": "deduplication", "description": "Pairs of records in a gallery that may be one person."},
    {
        "name": "cases",
        "description": "A border police agency's cases; identification (1:N) and verification (1:1).",
    },
    {"name": "searches", "description": "A queued identification, polled until it ends."},
    {"name": "review", "description": "Consular officers' decisions on candidates, and the review policies."},
    {"name": "audit", "description": "The signed, verifiable audit log: events, checkpoints, proofs."},
    {"name": "federation", "description": "This node's identity, its peers, and searches between national nodes."},
]
"""The order of the sections of /docs, whatever the order routes are matched in."""


STARTUP_REFUSED = 3
"""The exit code of a start refused for a reason the log names (uvicorn's for a failed start)."""


def refusal_path(data_dir: Path) -> Path:
    """Where a worker of ``serve --processes N`` leaves the reason its start was refused. uvicorn's
    supervisor then stops every worker and returns normally, and ``serve`` exits 3 with that
    reason rather than 0."""
    return data_dir / "start-refused"


def serving_app() -> FastAPI:
    """The app as ``readmit serve`` runs it, in each of its processes: a start refused for a
    known reason (the data folder in use, a key missing or wrong) ends the process with that
    reason on one line. Raised through uvicorn, it came out as some eighty lines of traceback."""
    return create_app(exit_on_refusal=True)


def create_app(
    settings: Settings | None = None, *, load_indexes_in_background: bool = True, exit_on_refusal: bool = False
) -> FastAPI:
    settings = settings or get_settings()
    runtime = Runtime.create(settings)
    keep_a_core_for_the_interpreter()  # the serving process only: a tool that opens a runtime keeps every core

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lock = None
        try:
            lock = lock_for_serving(settings.data_dir)
            with database_lock(runtime.engine, "start"):  # processes and nodes starting together: once
                upgrade_to_head(settings, runtime.engine)
                runtime.open_keyring()
        except DomainError as error:  # the folder in use, a wrong or missing key: the start stops, with its reason
            log.critical("cannot start: %s", error.message, extra={"event": {"reason": error.code}})
            if lock is not None:
                lock.release()
            if exit_on_refusal:
                if supervised():  # for the supervisor, whose own exit code uvicorn does not set
                    refusal_path(settings.data_dir).write_text(error.message)
                logging.shutdown()  # the line written out before the exit, which flushes nothing
                os._exit(STARTUP_REFUSED)
            raise
        # Alone, the process answers /readyz 503 while it loads. One of several loads before it
        # takes connections, so that a replacement for a dead sibling never answers unready.
        if load_indexes_in_background and not supervised():
            threading.Thread(target=runtime.start_indexes, name="index-loader", daemon=True).start()
        else:
            runtime.start_indexes()
        if supervised():  # serving from here on: a supervisor's end stops it gracefully
            end_with_parent(signal.SIGTERM)
        try:
            yield
        finally:
            runtime.stop()
            lock.release()

    app = FastAPI(
        title="readmit",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        openapi_tags=TAGS,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    install_openapi(app, settings)
    for module in (  # matched in this order on every request: identification's routes first
        cases,
        searches,
        health,
        metrics,
        principals,
        agreements,
        galleries,
        deduplication,
        review,
        review_policies,
        audit,
        node,
        peers,
        federation,
    ):
        app.include_router(module.router)
    app.include_router(web.router)
    app.mount("/review/static", StaticFiles(directory=Path(web.__file__).parent / "static"), name="review-static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestContext, metrics=runtime.metrics)
    return app
