"""The node's identity in a federation: its country, its name and its Ed25519 key, in a file
outside the database (mode 0600), as the audit log's key is.

A key of its own, not the audit log's: the audit key signs the log's checkpoints for life (every
verifier holds it, and a log never changes its key), while the node key authenticates the node
to its peers, who register it and can be given a new one. One compromised, the other still
holds; and a hub serving several processes shares its audit key but may run several nodes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.core.countries import check_country
from app.federation.exceptions import InvalidPeer, NodeKeyInvalid

API_VERSION = "1"


def key_id(public_key: bytes) -> str:
    """What a signature's ``keyid`` names: the SHA-256 of the raw public key, hex, 32 digits."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def parse_public_key(encoded: str) -> bytes:
    """The 32 bytes of a base64 Ed25519 public key, as ``GET /v1/node`` prints it."""
    try:
        raw = base64.b64decode(encoded, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidPeer("public_key is not a base64 Ed25519 public key (32 bytes)") from None
    return raw


def public_key_of(peer: HasPublicKey) -> bytes:
    return base64.b64decode(peer.public_key)


class HasPublicKey(Protocol):
    @property
    def public_key(self) -> str: ...


@dataclass(frozen=True)
class NodeIdentity:
    country: str
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def case_reference(self, case_id: int) -> str:
        """The pseudonym a peer knows one of this node's cases by: an HMAC of its id under a key
        derived from the node key, so that the peer can tell two searches of one case apart from
        two cases, and nothing more."""
        secret = hashlib.sha256(b"readmit case reference\n" + self.private_key.private_bytes_raw()).digest()
        return hmac.new(secret, str(case_id).encode(), hashlib.sha256).hexdigest()[:32]


def create_node(path: Path, country: str, name: str) -> NodeIdentity:
    """A new node key written to ``path`` (0600), never over an existing one: every peer holding
    the old public key would refuse the node."""
    check_country(country)
    if not name.strip():
        raise NodeKeyInvalid("a node needs a name")
    if path.exists():
        raise FileExistsError(f"{path} already holds a node key; a node keeps its key (its peers know it)")
    node = NodeIdentity(country, name, Ed25519PrivateKey.generate())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        seed = base64.b64encode(node.private_key.private_bytes_raw()).decode()
        json.dump({"country": country, "name": name, "ed25519_private_key": seed}, handle)
        handle.write("\n")
    return node


def load_node(path: Path) -> NodeIdentity | None:
    """The node's identity, or None when no key was made (this node is in no federation)."""
    try:
        content = json.loads(path.read_text())
        seed = base64.b64decode(content["ed25519_private_key"], validate=True)
        return NodeIdentity(content["country"], content["name"], Ed25519PrivateKey.from_private_bytes(seed))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise NodeKeyInvalid(f"{path} is not a usable node key: {error}") from None
