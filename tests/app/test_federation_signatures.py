"""Our RFC 9421 signing and verification path against the RFC's own Ed25519 test vector:
Appendix B.2.6 signs the test request of B.2 with the key ``test-key-ed25519`` of B.1.4. Ed25519
is deterministic and the example pins ``created``, so signing the RFC's request with the RFC's
key must give the RFC's Signature header byte for byte, and the RFC's signature must verify."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_private_key,
)
from http_message_signatures import HTTPMessageSignaturesException

from app.federation.exceptions import InvalidSignature
from app.federation.signatures import Parameters, RequestMessage, check, sign_with, signature_base_of, verify

# RFC 9421 B.1.4, test-key-ed25519
PRIVATE_KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
PUBLIC_KEY_SPKI = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
KEY_ID = "test-key-ed25519"

# RFC 9421 B.2, the test request
URL = "https://example.com/foo?param=Value&Pet=dog"
HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    ),
    "Content-Length": "18",
}
BODY = b'{"hello": "world"}'

# RFC 9421 B.2.6
COMPONENTS = ("date", "@method", "@path", "@authority", "content-type", "content-length")
CREATED = 1618884473
SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
SIGNATURE = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
SIGNATURE_BASE = "\n".join(
    [
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        '"@method": POST',
        '"@path": /foo',
        '"@authority": example.com',
        '"content-type": application/json',
        '"content-length": 18',
        '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"',
    ]
)


def rfc_private_key() -> Ed25519PrivateKey:
    key = load_pem_private_key(PRIVATE_KEY_PEM, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def rfc_public_key() -> bytes:
    key = load_der_public_key(base64.b64decode(PUBLIC_KEY_SPKI))
    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_the_rfc_private_key_is_the_published_public_keys():
    """Checked first, so that a mistyped key shows here and not as a signature mismatch."""
    assert rfc_private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == rfc_public_key()


def test_signing_the_rfc_request_gives_the_rfc_signature():
    # the example covers no Content-Digest: signed without one, as our path signs a request whose
    # digest it has not made (with a body, it makes the digest and covers it)
    uncovered = {name: value for name, value in HEADERS.items() if name != "Content-Digest"}
    request = httpx.Request("POST", URL, headers=uncovered, content=BODY)
    given = Parameters(KEY_ID, datetime.fromtimestamp(CREATED, UTC), nonce=None, tag=None, label="sig-b26", alg=False)
    base, signature = sign_with(rfc_private_key(), request, None, COMPONENTS, given)
    assert base == SIGNATURE_BASE
    assert request.headers["signature-input"] == SIGNATURE_INPUT
    assert request.headers["signature"] == SIGNATURE
    assert f"sig-b26=:{signature}:" == SIGNATURE


def rfc_request_as_received() -> RequestMessage:
    return RequestMessage("POST", URL, {**HEADERS, "Signature-Input": SIGNATURE_INPUT, "Signature": SIGNATURE})


def test_the_rfc_signature_verifies_and_is_rebuilt_into_the_rfc_signature_base():
    result = check(rfc_request_as_received(), KEY_ID, rfc_public_key(), COMPONENTS, None, None, None)
    assert signature_base_of(result) == SIGNATURE_BASE


def test_the_rfc_signature_altered_does_not_verify():
    altered = rfc_request_as_received()
    altered.headers["Date"] = "Tue, 20 Apr 2021 02:07:56 GMT"
    with pytest.raises(HTTPMessageSignaturesException):
        check(altered, KEY_ID, rfc_public_key(), COMPONENTS, None, None, None)


def test_a_conformant_signature_without_readmits_profile_is_refused_between_nodes():
    """Between nodes a signature must also be fresh, tagged ``readmit-federation``, carry a nonce
    and cover the body's digest: the RFC's example has none of these."""
    with pytest.raises(InvalidSignature):
        verify(rfc_request_as_received(), BODY, KEY_ID, rfc_public_key(), 300, COMPONENTS)
