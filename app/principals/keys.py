"""API keys: long random tokens, shown once, stored as SHA-256 hashes.

A key is ``rdm_<prefix>_<secret>``: the prefix finds the row through an index, the hash of the
whole key is compared in constant time. A fast hash is right here, unlike for passwords: the
secret carries 256 random bits, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_SCHEME = "rdm"


@dataclass(frozen=True)
class IssuedKey:
    token: str
    prefix: str
    digest: str


def issue_key() -> IssuedKey:
    prefix = secrets.token_hex(6)
    token = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedKey(token=token, prefix=prefix, digest=hash_key(token))


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def prefix_of(token: str) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 12:
        return None
    return parts[1]


def key_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(token), digest)
