"""Refusals of encryption at rest. Each stops the service (or a command) with a reason the
operator can act on: a gallery that cannot be decrypted is never served as an empty one."""

from __future__ import annotations

from app.core.errors import DomainError, Unavailable


class MasterKeyMissing(Unavailable):
    code = "master_key_missing"


class WrongMasterKey(Unavailable):
    code = "wrong_master_key"


class EncryptionOff(Unavailable):
    """Encryption is turned off but the database holds sealed data: it could not be read."""

    code = "encryption_off"


class SealedValueRefused(DomainError):
    """A stored ciphertext does not open with its key and place: altered, moved or truncated."""

    code = "sealed_value_refused"


class InvalidMasterKey(DomainError):
    code = "invalid_master_key"
