"""The OpenAPI schema as clients may trust it: every status an operation can answer, with the
body it really has, and the limits the service enforces.

FastAPI documents the success response of each route and a 422 of its own shape; the service
answers every refusal with ``{"error": {"code", "message", "details"}}`` (app/api/errors.py).
The refusals follow from what a route takes, so they are derived here once, from the route,
rather than repeated on every decorator:

- an API key (the route has a security requirement): 401, 403 (role), 429 (rate limits), and
  503 (the database cannot be reached);
- a path id: 404 (unknown, or outside the caller's country or agency);
- a body: 400 (not JSON), 413 (over ``READMIT_MAX_BODY_BYTES``) and 422; query or path
  parameters: 422.

Refusals that belong to one route (409 conflicts, 400 ``batch_too_large``) are declared on its
decorator with ``responses={409: refusal("...")}``; their description names the codes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.errors import ErrorOut
from app.core.config import Settings

ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorOut"}

GENERIC = {
    400: "invalid_body: the body is not JSON (or not UTF-8)",
    401: "unauthenticated: no API key, or an unknown or revoked one",
    403: "forbidden: the caller's role may not call this endpoint",
    404: "not_found: unknown, or outside the caller's country or agency (no existence leak)",
    409: "conflict with the state of the resource",
    413: "payload_too_large: the body exceeds READMIT_MAX_BODY_BYTES",
    422: "validation_error: the request does not match the schema (details lists where), or a rule of the "
    "operation named by its code",
    429: "rate_limited (per principal) or too_many_failed_authentications (per address); see Retry-After",
    503: "database_unavailable or index_unavailable: retry later",
}


def operation_id(route: APIRoute) -> str:
    """The route function's name (``create_gallery``, ``identify``): what a generated client
    calls its function. FastAPI's default adds the path and the method
    (``create_v1_galleries_post``); names are unique across routes, which a test checks."""
    return route.name


def refusal(description: str) -> dict[str, Any]:
    """A route-specific error response for ``responses=``: its body is the API's error body."""
    return {"model": ErrorOut, "description": description}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace ``app.openapi`` by the schema built here (once, then cached like FastAPI's)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            complete(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.update(_model_schemas(ErrorOut))
    for path in schema["paths"].values():
        for operation in path.values():
            _declare_refusals(operation)
    _state_limits(components, settings)


def _declare_refusals(operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    statuses: set[int] = set()
    if operation.get("security"):
        statuses |= {401, 403, 429, 503}
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {400, 413, 422}
    if parameters:
        statuses.add(422)
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        entry = responses.setdefault(str(status), {})
        if status == 422 and entry.get("description") == "Validation Error":
            entry["description"] = GENERIC[422]  # FastAPI's own, whose body the service never sends
        entry.setdefault("description", GENERIC[status])
    for status, entry in responses.items():
        if status.isdigit() and int(status) >= 400 and (status == "422" or "content" not in entry):
            entry["content"] = {"application/json": {"schema": ERROR_SCHEMA_REF}}
    operation["responses"] = dict(sorted(responses.items()))


def _state_limits(components: dict[str, Any], settings: Settings) -> None:
    """Limits the service enforces from its settings (the same answer whatever the deployment)."""
    probes = {"minItems": 1, "maxItems": settings.max_probes}
    for model in ("IdentificationIn", "VerificationIn"):
        for field in ("probes", "probes_b64"):
            _array_branch(components[model]["properties"][field]).update(probes)
    _array_branch(components["RecordBatchIn"]["properties"]["records"])["maxItems"] = settings.max_batch_records
    for field in ("templates", "templates_b64"):
        prop = components["RecordIn"]["properties"][field]
        prop["description"] += f"; at most {settings.max_templates_per_record} per record (too_many_templates)"


def _array_branch(prop: dict[str, Any]) -> dict[str, Any]:
    if prop.get("type") == "array":
        return prop
    return next(branch for branch in prop["anyOf"] if branch.get("type") == "array")


def _model_schemas(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, model.__name__: schema}
