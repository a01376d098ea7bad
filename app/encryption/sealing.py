"""Values sealed in the database: templates and probes, AES-256-GCM under a data key.

A sealed value is ``0x01 ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)``: 29 bytes
more than the little-endian float32 bytes it seals. Its associated data names where it belongs,
so that a value copied into another row, record, sample, gallery or search does not open:

- a template: ``b"readmit/template/1" ‖ gallery id ‖ record id ‖ sample`` (uint64, uint64 and
  uint32, big-endian);
- a search's probes: ``b"readmit/probes/1" ‖ search id (uint64 BE)``.

The data key itself is the gallery's (or the probes'), so a value also fails to open under any
other gallery's key. Nonces are random: at most a few hundred million values per data key keep
the chance of a repeated nonce far below 2^-32, as NIST SP 800-38D asks.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.encryption.exceptions import SealedValueRefused

VERSION = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = len(VERSION) + NONCE_BYTES + TAG_BYTES
_TEMPLATE = struct.Struct(">18sQQI")
_PROBES = struct.Struct(">16sQ")


def template_place(gallery_id: int, record_id: int, sample: int) -> bytes:
    """The associated data of one template."""
    return _TEMPLATE.pack(b"readmit/template/1", gallery_id, record_id, sample)


def probes_place(search_id: int) -> bytes:
    """The associated data of a search's probes."""
    return _PROBES.pack(b"readmit/probes/1", search_id)


class Sealer:
    """Seals and opens values under one data key."""

    def __init__(self, data_key: bytes) -> None:
        self._cipher = AESGCM(data_key)

    def seal(self, value: bytes, place: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._cipher.encrypt(nonce, value, place)

    def seal_many(self, values: Sequence[bytes], places: Sequence[bytes]) -> list[bytes]:
        """As :meth:`seal` for each value, with the nonces drawn in one call (bulk enrolment)."""
        nonces = os.urandom(NONCE_BYTES * len(values))
        encrypt = self._cipher.encrypt
        sealed = []
        for i, (value, place) in enumerate(zip(values, places, strict=True)):
            nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            sealed.append(VERSION + nonce + encrypt(nonce, value, place))
        return sealed

    def open(self, sealed: bytes, place: bytes) -> bytes:
        if len(sealed) < OVERHEAD or sealed[:1] != VERSION:
            raise SealedValueRefused("a stored value is not sealed in a known format")
        try:
            return self._cipher.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], place)
        except InvalidTag:
            raise SealedValueRefused("a stored value does not open: altered, or moved from another place") from None
