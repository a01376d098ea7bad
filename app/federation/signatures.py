"""RFC 9421 HTTP Message Signatures with Ed25519 on every message between nodes, through the
``http-message-signatures`` library (RFC 9530 Content-Digest for the body).

A request signs ``@method``, ``@target-uri`` and ``content-digest``; an answer signs
``@status``, ``content-digest`` and, from the request it answers, ``@method``, ``@target-uri``
and the request's own signature (``"signature";req;key="readmit"``), so that an answer cannot be
passed off as the answer to another request. Every signature carries ``created``, a random
``nonce``, ``keyid`` (the SHA-256 of the signer's public key, app/federation/node.py), ``alg``
and the tag ``readmit-federation``. Freshness (``created`` within the window) is checked here;
that a nonce was never seen before is checked by the receiver against its store.

Each side keeps a :class:`Proof` of every signature it made or checked: the signature base (the
exact text signed: method, URI, digests, parameters; never a body), the signature and the key
id, from which anyone holding the signer's public key can check it again, later, offline.

The same two functions that sign and check readmit's messages (:func:`sign_with`, :func:`check`)
reproduce and accept the RFC's own Ed25519 example (Appendix B.2.6,
tests/app/test_federation_signatures.py); readmit's profile is what :func:`sign` and
:func:`verify` add to them.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    VerifyResult,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from app.federation.exceptions import InvalidSignature, ReplayedMessage
from app.federation.node import NodeIdentity

LABEL = "readmit"
TAG = "readmit-federation"
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest")
RESPONSE_COMPONENTS = ("@status", '"@method";req', '"@target-uri";req', f'"signature";req;key="{LABEL}"')
REQUIRED_IN_RESPONSE = (*RESPONSE_COMPONENTS, "content-digest")
_STALE = ("Signature age exceeds", 'Signature "created" parameter is set to a time in the future')
"""How the library words a signature created outside the window (checked before the signature)."""


class Headers(Protocol):
    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class RequestMessage:
    """A request as the verifier sees it: the method, the URL as received, the header fields."""

    method: str
    url: str
    headers: Any


@dataclass(frozen=True)
class ResponseMessage:
    """An answer being signed (``headers`` a dict the signature headers are added to) or
    checked, with the request it answers."""

    status_code: int
    headers: Any
    request: RequestMessage


@dataclass(frozen=True)
class Proof:
    """One checked or made signature, as the audit trail stores it (app/federation/audit.py)."""

    key_id: str
    nonce: str
    created: int
    signature_base: str
    signature: str
    """base64 of the 64-byte Ed25519 signature."""

    def as_details(self) -> dict[str, object]:
        return {"keyid": self.key_id, "signature_base": self.signature_base, "signature": self.signature}


class _OneKey(HTTPSignatureKeyResolver):
    """The library asks a resolver for keys by id; a signer or verifier here has exactly one."""

    def __init__(self, key_id: str, private: Ed25519PrivateKey | None, public: Ed25519PublicKey | None) -> None:
        self.key_id, self.private, self.public = key_id, private, public

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        if self.private is None or key_id != self.key_id:
            raise InvalidSignature("no private key for this key id")
        return self.private

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        if self.public is None or key_id != self.key_id:
            raise InvalidSignature("the message is signed by another key than the peer's")
        return self.public


@dataclass(frozen=True)
class Parameters:
    """A signature's parameters (RFC 9421 §2.3) and label. readmit's own: :func:`sign`; any
    other (the RFC's test vectors) through :func:`sign_with` as well, so that one path makes both."""

    key_id: str
    created: datetime
    nonce: str | None
    tag: str | None
    label: str = LABEL
    alg: bool = True


def sign_with(
    private_key: Ed25519PrivateKey, message: Any, body: bytes | None, components: tuple[str, ...], given: Parameters
) -> tuple[str, str]:
    """Sign ``message`` (an httpx.Request, or a :class:`ResponseMessage`) in place over
    ``components`` (and, with a ``body``, its Content-Digest, added): adds the Signature-Input and
    Signature headers. Returns the signature base and the base64 signature."""
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(given.key_id, private_key, None)
    )
    prepared = signer.prepare(
        message,
        key_id=given.key_id,
        created=given.created,
        nonce=given.nonce,
        label=given.label,
        tag=given.tag,
        include_alg=given.alg,
        covered_component_ids=components,
        body=body,
    )
    signature = private_key.sign(prepared.signature_base)
    signer.apply(message, prepared, signature)
    return prepared.signature_base.decode(), base64.b64encode(signature).decode()


def sign(node: NodeIdentity, message: Any, body: bytes, components: tuple[str, ...]) -> Proof:
    """Sign ``message`` as this node: readmit's label, tag, a fresh nonce, the body's digest."""
    given = Parameters(node.key_id, datetime.now(UTC), secrets.token_urlsafe(18), TAG)
    base, signature = sign_with(node.private_key, message, body, components, given)
    assert given.nonce is not None
    return Proof(node.key_id, given.nonce, int(given.created.timestamp()), base, signature)


def sign_request(node: NodeIdentity, request: Any) -> Proof:
    return sign(node, request, request.content, REQUEST_COMPONENTS[:2])


def sign_response(node: NodeIdentity, response: ResponseMessage, body: bytes) -> Proof:
    return sign(node, response, body, RESPONSE_COMPONENTS)


def signer_key_id(headers: Headers) -> str:
    """The ``keyid`` a message claims, read before it is verified, to find whose key to check it
    with; missing or unreadable: the message is unsigned."""
    values = [value for name, value in headers.items() if name.lower() == "signature-input"]
    if len(values) != 1:
        raise InvalidSignature("the message carries no single Signature-Input: unsigned messages are refused")
    try:
        parsed: dict[str, Any] = cast(dict[str, Any], http_sf.parse(values[0].encode(), tltype="dictionary"))
        _, parameters = parsed[LABEL]
        return str(parameters["keyid"])
    except (ValueError, KeyError, TypeError):
        raise InvalidSignature(f"the Signature-Input names no keyid under the label {LABEL}") from None


def verify(
    message: Any,
    body: bytes,
    key_id: str,
    public_key: bytes,
    window_s: int,
    required: tuple[str, ...],
) -> Proof:
    """The proof of ``message``'s signature by ``public_key`` over at least ``required`` and the
    body's digest, created within ``window_s`` of now, with readmit's tag and a nonce;
    InvalidSignature or ReplayedMessage (too old, or ahead of the clock by more than the window)
    otherwise."""
    try:
        result = check(message, key_id, public_key, required, timedelta(seconds=window_s), TAG, body)
    except HTTPMessageSignaturesException as error:
        if str(error).startswith(_STALE):
            raise ReplayedMessage(f"the message was not signed within {window_s} s of now") from None
        raise InvalidSignature(f"the message's signature does not verify: {error}") from None
    except ValueError as error:
        raise InvalidSignature(f"the message's signature does not verify: {error}") from None
    if not result.nonce:
        raise InvalidSignature("the signature carries no nonce")
    signature = _signature_of(message)
    return Proof(key_id, str(result.nonce), int(result.parameters["created"]), signature_base_of(result), signature)


def check(
    message: Any,
    key_id: str,
    public_key: bytes,
    required: tuple[str, ...],
    max_age: timedelta | None,
    tag: str | None,
    body: bytes | None,
) -> VerifyResult:
    """RFC 9421 verification of ``message``'s one signature by ``public_key`` (and, with a
    ``body``, of its Content-Digest): the library's exceptions when it does not verify."""
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=_OneKey(key_id, None, Ed25519PublicKey.from_public_bytes(public_key)),
    )
    if max_age is not None:
        verifier.max_clock_skew = max_age
    [result] = verifier.verify(message, max_age=max_age, expect_tag=tag, require_components=required, body=body)
    return result


def signature_base_of(result: VerifyResult) -> str:
    """The exact text that was signed (RFC 9421 §2.5), rebuilt from what was verified."""
    return "\n".join(f"{name}: {value}" for name, value in result.covered_components.items())


def _signature_of(message: Any) -> str:
    """The base64 signature of the ``readmit`` label, as the Signature field carries it."""
    value = next(v for name, v in message.headers.items() if name.lower() == "signature")
    start = value.index(":") + 1
    return value[start : value.index(":", start)]
