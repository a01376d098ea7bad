"""The audit log's signing key, kept in a file outside the database: a database copy, or an
intruder in it, gets no key, and the operator rotates or escrows the file like any secret."""

from __future__ import annotations

from pathlib import Path

from app.audit.exceptions import SigningKeyMissing
from app.audit.notes import NoteError, Signer, Verifier


def create_signing_key(path: Path, name: str) -> Verifier:
    """A new Ed25519 key named ``name`` (the log's origin, e.g. ``hub.example.org/audit``)
    written to ``path`` (mode 0600, never over an existing key); its verifier key is what
    every party is given."""
    if path.exists():
        raise FileExistsError(f"{path} already holds a key; a log keeps its key for life")
    signer = Signer.generate(name)
    signer.save(path)
    return signer.verifier


def load_signing_key(path: Path) -> Signer:
    try:
        return Signer.load(path)
    except FileNotFoundError:
        raise SigningKeyMissing(
            f"no audit log signing key at {path}: set READMIT_AUDIT_KEY_FILE to where it is; for a log that "
            "already has checkpoints, restore the file from its backup (a new key would sign a log no party's "
            "verifier accepts); for a new log only, create it with `readmit audit keygen --name ORIGIN`"
        ) from None
    except (NoteError, ValueError) as error:
        raise SigningKeyMissing(f"{path} is not a usable audit log signing key: {error}") from None


def signing_key_at_start(path: Path, origin: str, new_install: bool) -> Verifier | None:
    """Check the key the service is about to sign with. The first start of a new installation
    (no log yet) creates it and returns its verifier key to publish; anywhere else a missing
    key is an error (SigningKeyMissing), never silently replaced: every verifier holding the
    old verifier key would reject the log."""
    try:
        load_signing_key(path)
    except SigningKeyMissing:
        if not new_install or path.exists():
            raise
        return create_signing_key(path, origin)
    return None
