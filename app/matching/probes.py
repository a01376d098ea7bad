"""A search's probes as the database stores them: sealed under the probes' data key, bound to
the search (see :mod:`app.encryption.sealing`); or in clear while encryption at rest is off."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.encryption.keyring import PROBES_SCOPE, Keyring
from app.encryption.sealing import probes_place


def seal_probes(session: Session, search_id: int, probes: bytes) -> bytes:
    sealer = Keyring.of(session).sealer(session, PROBES_SCOPE)
    return probes if sealer is None else sealer.seal(probes, probes_place(search_id))


def open_probes(session: Session, search_id: int, stored: bytes | None) -> bytes:
    """The probes' float32 bytes (none once erased); raises SealedValueRefused when altered
    or moved."""
    sealer = Keyring.of(session).sealer(session, PROBES_SCOPE)
    if stored is None or sealer is None:
        return stored or b""
    return sealer.open(stored, probes_place(search_id))
