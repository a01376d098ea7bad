"""The routes peer nodes call, authenticated by their RFC 9421 signature instead of an API key;
every answer is signed by this node, refusals included (once the request's signature could be
read), so that the peer can prove what it was told."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from app.api.deps import RuntimeDep
from app.api.errors import error_body, headers_of, status_of
from app.api.openapi import refusal
from app.core.errors import DomainError, Unauthenticated
from app.core.ids import RowId
from app.federation import inbound, outbound
from app.federation.exceptions import InvalidMessage, MessageTooLarge, NodeNotInitialised
from app.federation.signatures import LABEL, TAG, RequestMessage, ResponseMessage, sign_response
from app.federation.trust import Verified, authenticate_peer
from app.federation.wire import Acknowledged, FederatedSearchRequest, FederatedSearchState
from app.runtime import Runtime

router = APIRouter(prefix="/v1/federation", tags=["federation"])
SIGNED: dict[int | str, dict[str, Any]] = {
    401: refusal(
        "invalid_signature: unsigned, altered, or signed by no peer's key; replayed_message "
        "(Accept-Signature says how to sign)"
    ),
    403: refusal("no_agreement: no agreement in force here for the peer's country and modality; wrong_country"),
    409: refusal(
        "node_not_initialised: this node has no node key (readmit node init) and takes no part in a federation"
    ),
    413: refusal("payload_too_large: over READMIT_FEDERATION_MAX_BODY_BYTES"),
    422: refusal("invalid_message: the body is not the documented message"),
    429: refusal("rate_limited: the peer's messages per minute (READMIT_FEDERATION_REQUESTS_PER_MINUTE); Retry-After"),
    503: refusal("request_in_progress: a resent request another process here still runs; resend it later"),
}


@router.post(
    "/searches",
    response_model=FederatedSearchState,
    summary="A peer node's identification request (signed)",
    responses={202: {"model": FederatedSearchState, "description": "accepted, still queued or running"}, **SIGNED},
)
async def receive_search(request: Request, runtime: RuntimeDep) -> Response:
    """Decided by this node's own agreements, run in its queue by the deadline sent; answered
    with candidate ids, reference ids, ranks, scores, bands and review states only."""

    async def handle(verified: Verified, body: bytes) -> tuple[int, BaseModel]:
        message = _parse(FederatedSearchRequest, body)
        state = await inbound.receive_search(runtime.matching, _node(runtime), verified.peer, verified.proof, message)
        return (202 if state.status in ("queued", "running") else 200), state

    return await _signed_exchange(request, runtime, handle, "search")


@router.get(
    "/searches/{reference}",
    response_model=FederatedSearchState,
    summary="A peer polls the state of a search it asked for (signed)",
    responses=SIGNED,
)
async def poll_search(reference: RowId, request: Request, runtime: RuntimeDep) -> Response:
    async def handle(verified: Verified, body: bytes) -> tuple[int, BaseModel]:
        state = await run_in_threadpool(inbound.answer_poll, runtime.sessions, verified.peer, verified.proof, reference)
        return 200, state

    return await _signed_exchange(request, runtime, handle, "poll")


@router.post(
    "/notifications",
    response_model=Acknowledged,
    summary="A peer notifies a change to a search this node asked it for (signed)",
    responses=SIGNED,
)
async def receive_notification(request: Request, runtime: RuntimeDep) -> Response:
    async def handle(verified: Verified, body: bytes) -> tuple[int, BaseModel]:
        state = _parse(FederatedSearchState, body)
        await run_in_threadpool(outbound.receive_notification, runtime.sessions, verified.peer, verified.proof, state)
        return 200, Acknowledged(received=True)

    return await _signed_exchange(request, runtime, handle, "notification")


async def _signed_exchange(request: Request, runtime: Runtime, handle: Any, kind: str) -> Response:
    """Check the size and the signature, run ``handle``, sign its answer or the refusal.
    ``kind`` names the message in the per-peer metrics as its sender names it (search, poll,
    notification), so that both sides' counts of one exchange line up."""
    settings = runtime.settings
    message = RequestMessage(request.method, str(request.url), request.headers)
    address = request.client.host if request.client else "unknown"
    try:
        runtime.throttle.check_address(address)  # an address that keeps failing is refused before its body is read
        node = _node(runtime)
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > settings.federation_max_body_bytes:
            raise MessageTooLarge(f"the message exceeds {settings.federation_max_body_bytes} bytes")
        body = await request.body()
        if len(body) > settings.federation_max_body_bytes:
            raise MessageTooLarge(f"the message exceeds {settings.federation_max_body_bytes} bytes")
        verified = await run_in_threadpool(
            authenticate_peer,
            runtime.sessions,
            runtime.read_sessions,
            runtime.throttle,
            runtime.metrics,
            settings.federation_signature_window_s,
            message,
            body,
        )
    except DomainError as error:  # nobody known to sign for: answered unsigned
        if isinstance(error, Unauthenticated):
            runtime.throttle.failed(address)
        return _refusal(None, message, error)
    try:
        status, payload = await handle(verified, body)
    except DomainError as error:
        runtime.metrics.peer_messages.labels(verified.peer.country, kind, "received", error.code).inc()
        return _refusal(node, message, error)
    runtime.metrics.peer_messages.labels(verified.peer.country, kind, "received", str(status)).inc()
    return _answer(node, message, status, payload.model_dump(mode="json"))


ACCEPT_SIGNATURE = f'{LABEL}=("@method" "@target-uri" "content-digest");created;nonce;tag="{TAG}";alg="ed25519"'
"""How a peer is to sign (RFC 9421 §5.1, Accept-Signature), told with every 401: a peer is not
authenticated by a bearer token, and RFC 9421 defines no WWW-Authenticate scheme."""


def _refusal(node: Any, request: RequestMessage, error: DomainError) -> Response:
    signature = {"accept-signature": ACCEPT_SIGNATURE}
    headers = signature if isinstance(error, Unauthenticated) else headers_of(error) or {}
    return _answer(node, request, status_of(error), error_body(error.code, error.message, error.details), headers)


def _answer(
    node: Any, request: RequestMessage, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", **(extra or {})}
    if node is not None:
        sign_response(node, ResponseMessage(status, headers, request), body)
    return Response(body, status_code=status, headers=headers)


def _node(runtime: Runtime) -> Any:
    if runtime.node is None:
        raise NodeNotInitialised("this node takes part in no federation: no node key")
    return runtime.node


Message = TypeVar("Message", bound=BaseModel)


def _parse(model: type[Message], body: bytes) -> Message:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise InvalidMessage(f"not a {model.__name__}: {error.error_count()} errors") from None
