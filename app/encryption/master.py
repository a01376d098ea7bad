"""The master key, behind the one small interface an HSM or a cloud KMS would also offer.

A master key never encrypts biometric data: it only wraps and unwraps data keys (envelope
encryption, as AWS KMS, Vault's transit engine and MOSIP's key manager present it), so rotating
it re-wraps a few dozen bytes per gallery and leaves every template where it is. The local
implementation wraps with AES key wrap (RFC 3394) under a 256-bit key read from
``READMIT_MASTER_KEY`` (base64) or from a key file (base64 on one line, mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from app.encryption.exceptions import InvalidMasterKey, WrongMasterKey

KEY_BYTES = 32


class MasterKey(Protocol):
    """Wraps data keys; ``key_id`` names the key (stored beside each wrapped data key) so that a
    wrong key is reported as such, with both names, rather than as garbage."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalMasterKey:
    """A 256-bit key held in this process (from a file or the environment)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidMasterKey(f"a master key is {KEY_BYTES} bytes (AES-256), got {len(key)}")
        self._key = key
        digest = hashlib.sha256(b"readmit master key id\x00" + key).hexdigest()
        self._key_id = f"local:{digest[:16]}"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._key, wrapped)
        except InvalidUnwrap:
            raise WrongMasterKey(f"a data key does not unwrap with master key {self.key_id}") from None

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"LocalMasterKey({self.key_id})"


def random_key() -> bytes:
    return os.urandom(KEY_BYTES)


def decode_key(text: str, where: str) -> LocalMasterKey:
    try:
        return LocalMasterKey(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise InvalidMasterKey(f"{where} does not hold a base64 master key") from None


def read_key_file(path: Path) -> LocalMasterKey:
    return decode_key(path.read_text(), str(path))


def write_key_file(path: Path, key: bytes | None = None) -> LocalMasterKey:
    """A new key file readable by its owner only (0600), never over an existing one: losing a
    master key loses every gallery it protects."""
    key = key if key is not None else random_key()
    master = LocalMasterKey(key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return master
