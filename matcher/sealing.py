"""Snapshot sections sealed with AES-256-GCM, so that a copy of a snapshot file without the key
is a copy of nothing biometric.

The caller owns the key (the service unwraps one data key per gallery; a notebook may pass any
32 random bytes): the matcher only needs the key and a name for it, which it writes in clear in
the manifest so that a load with another key fails with a clear reason. A section is sealed in
chunks of at most ``CHUNK`` bytes, each its own GCM message (cryptography's AES-GCM takes at most
2 GiB a call, and chunks let a load decrypt straight into the array it returns): chunk ``i`` is
stored as ciphertext followed by its 16-byte tag, under the nonce ``prefix ‖ uint32 i`` with a
random 8-byte prefix per section and write. Each chunk's associated data binds it to the key
name, the snapshot's manifest, its section's name, dtype and shape, its position and the number
of chunks, so that no chunk, section or manifest field can be swapped, reordered, truncated or
edited unnoticed.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from matcher.errors import SnapshotError

ALGORITHM = "AES-256-GCM"
CHUNK = 64 << 20
TAG_BYTES = 16
_NONCE_PREFIX_BYTES = 8
_INDEX = struct.Struct(">I")
_AAD_LABEL = b"readmit-snapshot-section/1\x00"


@dataclass(frozen=True)
class SnapshotKey:
    """A 256-bit AES key and the name it is known by (written in clear; never the key)."""

    key_id: str
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("a snapshot key is 32 bytes (AES-256)")

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"SnapshotKey(key_id={self.key_id!r})"


def sealed_size(nbytes: int) -> int:
    """Bytes a section of ``nbytes`` takes once sealed: each chunk gains its tag."""
    return nbytes + TAG_BYTES * chunk_count(nbytes)


def chunk_count(nbytes: int) -> int:
    return -(-nbytes // CHUNK)


class SectionSealer:
    """Seals or opens the chunks of one section, as its manifest entry (``plain_nbytes``,
    ``nonce_prefix``, ``dtype``, ``shape``) describes it."""

    def __init__(self, key: SnapshotKey, manifest: dict[str, Any], section: dict[str, Any], name: str) -> None:
        self._cipher = AESGCM(key.key)
        self._context = {
            "key_id": key.key_id,
            "manifest": manifest,
            "section": name,
            "dtype": section["dtype"],
            "shape": section["shape"],
        }
        try:
            self._chunks = chunk_count(int(section["plain_nbytes"]))
            self._prefix = bytes.fromhex(section["nonce_prefix"])
        except (KeyError, TypeError, ValueError):
            raise SnapshotError(f"section {name!r} is sealed without a plain size or a nonce prefix") from None
        if len(self._prefix) != _NONCE_PREFIX_BYTES:
            raise SnapshotError(f"section {name!r} has a nonce prefix of {len(self._prefix)} bytes")

    @staticmethod
    def new_prefix() -> str:
        """A section's nonce prefix, fresh for every write (hex, as the manifest holds it)."""
        return os.urandom(_NONCE_PREFIX_BYTES).hex()

    def seal_into(self, index: int, plain: memoryview, out: bytearray) -> memoryview:
        """Chunk ``index`` sealed into ``out``; returns the bytes to store."""
        stored = memoryview(out)[: plain.nbytes + TAG_BYTES]
        self._cipher.encrypt_into(self._nonce(index), plain, self._aad(index), stored)
        return stored

    def open_into(self, index: int, stored: memoryview, plain: memoryview, where: str) -> None:
        """Chunk ``index`` opened into ``plain``; raises SnapshotError on a wrong key or any change."""
        try:
            self._cipher.decrypt_into(self._nonce(index), stored, self._aad(index), plain)
        except InvalidTag:
            raise SnapshotError(f"{where}: cannot be decrypted (another key, or the file was altered)") from None

    def _nonce(self, index: int) -> bytes:
        return self._prefix + _INDEX.pack(index)

    def _aad(self, index: int) -> bytes:
        context = dict(self._context, chunk=index, chunks=self._chunks)
        return _AAD_LABEL + json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
