"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and checkpoints
(c2sp.org/tlog-checkpoint): the formats Go's checksum database and Sigstore use, so that a
verifier written for them reads ours.

Keys use the encodings of golang.org/x/mod/sumdb/note: the verifier key
``<name>+<hex key id>+<base64(0x01 || public key)>`` and the private key
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``; the key id is the first four bytes
of SHA-256(name || 0x0A || 0x01 || public key). The key's name is the log's origin, the first
line of every checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space open every signature line
TIME_EXTENSION = "time "


class NoteError(ValueError):
    """A key or note that is malformed or whose signature does not verify."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def _ed25519(encoded: str) -> bytes:
    """The 32 key bytes of ``base64(0x01 || key)``, the encoding of verifier and private keys."""
    try:
        material = base64.b64decode(encoded, validate=True)
    except ValueError as error:
        raise NoteError(f"not base64: {error}") from None
    if material[:1] != ED25519 or len(material) != 33:
        raise NoteError("only Ed25519 keys (type 0x01, 32 bytes) are accepted")
    return material[1:]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"a key name has no spaces or '+': {name!r}")


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def __str__(self) -> str:
        """The verifier key string a checkpoint's reader is configured with."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519 + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            name, hex_id, encoded = text.strip().split("+", 2)
        except ValueError:
            raise NoteError("not a verifier key (name+keyid+base64)") from None
        verifier = cls(name, _ed25519(encoded))
        if verifier.key_id.hex() != hex_id.lower():
            raise NoteError("the verifier key's id does not match its name and public key")
        return verifier

    def open(self, note: str) -> str:
        """The text of ``note`` once a signature of this key over it verifies; signatures of
        other keys are ignored, as the spec requires."""
        text, separator, signatures = note.rpartition("\n\n")
        if not separator:
            raise NoteError("a signed note is its text, a blank line, then signature lines")
        text += "\n"
        for line in signatures.splitlines():
            if not line.startswith(SIGNATURE_PREFIX):
                raise NoteError(f"malformed signature line {line!r}")
            name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
            blob = base64.b64decode(encoded)
            if name != self.name or blob[:4] != self.key_id:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[4:], text.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {self.name} does not verify") from None
            return text
        raise NoteError(f"the note carries no signature of {self.name}+{self.key_id.hex()}")


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, text: str) -> str:
        if not text.endswith("\n"):
            raise NoteError("a note's text ends with a newline")
        signature = self.verifier.key_id + self.private_key.sign(text.encode())
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {base64.b64encode(signature).decode()}\n"

    def encode(self) -> str:
        seed = self.private_key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{base64.b64encode(ED25519 + seed).decode()}"

    @classmethod
    def decode(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signed-note private key (PRIVATE+KEY+name+keyid+base64)")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(_ed25519(parts[4])))
        if signer.verifier.key_id.hex() != parts[3]:
            raise NoteError("the private key's id does not match its name and key")
        return signer

    def save(self, path: Path) -> None:
        """Written readable by its owner only (0600), never over an existing key: a lost key
        breaks every verifier's trust, a replaced one even more so."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.encode() + "\n")

    @classmethod
    def load(cls, path: Path) -> Signer:
        return cls.decode(path.read_text())


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: datetime

    def text(self) -> str:
        """The note text: origin, size, base64 root hash, then one extension line
        ``time <unix seconds>`` so that the signature covers when the log said it."""
        stamp = int(self.time.timestamp())
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n{TIME_EXTENSION}{stamp}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.rstrip("\n").split("\n")
        if len(lines) < 3 or not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
            raise NoteError("a checkpoint's text is origin, tree size and root hash, one a line")
        root = base64.b64decode(lines[2], validate=True)
        if len(root) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        times = [line[len(TIME_EXTENSION) :] for line in lines[3:] if line.startswith(TIME_EXTENSION)]
        stamp = int(times[0]) if times and times[0].isdigit() else 0
        return cls(lines[0], int(lines[1]), root, datetime.fromtimestamp(stamp, UTC))
