"""Encryption at rest as the service starts and as operators run it: the master key found (or
made, on a fresh database), the data keys unwrapped, clear data left by an older version (or by
a run with encryption off) sealed, and the master key rotated."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.base import utcnow
from app.db.scrub import rewrite_tables
from app.db.session import Sessions, engine_of, transaction
from app.encryption.exceptions import MasterKeyMissing
from app.encryption.keyring import PROBES_SCOPE, Keyring, gallery_scope
from app.encryption.master import MasterKey, decode_key, read_key_file, write_key_file
from app.encryption.models import DataKey
from app.encryption.sealing import probes_place, template_place
from app.galleries.models import Gallery, Template
from app.matching.models import Search

log = logging.getLogger(__name__)

_SEAL_CHUNK = 10_000


@dataclass(frozen=True)
class Sealed:
    """What a start sealed of the clear data it found."""

    galleries: list[int]
    templates: int
    probes: int


@dataclass(frozen=True)
class DataKeyView:
    scope: str
    master_key_id: str
    created_at: datetime
    wrapped_at: datetime


def configured_master_key(session: Session, settings: Settings) -> MasterKey | None:
    """The master key from ``READMIT_MASTER_KEY`` or the key file. On a database with no data
    key yet and no key file, a new key file is made (the README's set-up); with data keys, a
    missing key is an error: a new key could open none of them."""
    if not settings.encrypt_at_rest:
        return None
    if settings.master_key is not None:
        return decode_key(settings.master_key.get_secret_value(), "READMIT_MASTER_KEY")
    path = settings.master_key_path
    if path.exists():
        return read_key_file(path)
    wrapped_by = sorted(set(session.scalars(select(DataKey.master_key_id))))
    if wrapped_by:
        raise MasterKeyMissing(
            f"no master key: READMIT_MASTER_KEY is unset and {path} does not exist, "
            f"and the data keys are wrapped by master key {', '.join(wrapped_by)}"
        )
    try:
        master = write_key_file(path)
    except FileExistsError:  # made by a process starting at the same moment
        return read_key_file(path)
    log.warning(
        "master key generated: back it up apart from the data",
        extra={"event": {"path": str(path), "key_id": master.key_id}},
    )
    return master


def open_keyring(sessions: Sessions, keyring: Keyring, settings: Settings) -> Sealed:
    """Unlock ``keyring`` (a wrong or missing key stops here) and seal whatever clear data the
    database holds, before any index is opened or any request served."""
    with transaction(sessions) as session:
        keyring.unlock(session, configured_master_key(session, settings))
    if not keyring.enabled:
        return Sealed([], 0, 0)
    return seal_clear_data(sessions, keyring)


def seal_clear_data(sessions: Sessions, keyring: Keyring) -> Sealed:
    """Give every gallery without a data key one, sealing its templates in the same
    transaction; likewise the probes. A gallery is all clear or all sealed: its data key is
    committed with its sealed templates, never before."""
    galleries, templates = [], 0
    with sessions() as session:
        keyed = set(session.scalars(select(DataKey.scope)))
        clear = [g for g in session.scalars(select(Gallery.id).order_by(Gallery.id)) if gallery_scope(g) not in keyed]
    for gallery_id in clear:
        with transaction(sessions) as session:
            templates += _seal_gallery(session, keyring, gallery_id)
        galleries.append(gallery_id)
    with transaction(sessions) as session:
        probes = 0 if session.get(DataKey, PROBES_SCOPE) is not None else _seal_probes(session, keyring)
    if templates or probes:
        log.warning(
            "clear data sealed", extra={"event": {"galleries": galleries, "templates": templates, "probes": probes}}
        )
        rewrite_tables(engine_of(sessions), ["templates", "searches"])
    return Sealed(galleries, templates, probes)


def _seal_gallery(session: Session, keyring: Keyring, gallery_id: int) -> int:
    sealer = keyring.sealer(session, gallery_scope(gallery_id))
    assert sealer is not None
    sealed, last = 0, 0
    while True:
        rows = session.execute(
            select(Template.id, Template.record_id, Template.sample, Template.vector)
            .where(Template.gallery_id == gallery_id, Template.id > last)
            .order_by(Template.id)
            .limit(_SEAL_CHUNK)
        ).all()
        if not rows:
            return sealed
        values = sealer.seal_many(
            [row.vector for row in rows], [template_place(gallery_id, row.record_id, row.sample) for row in rows]
        )
        session.execute(update(Template), [{"id": row.id, "vector": v} for row, v in zip(rows, values, strict=True)])
        sealed, last = sealed + len(rows), rows[-1].id


def _seal_probes(session: Session, keyring: Keyring) -> int:
    sealer = keyring.sealer(session, PROBES_SCOPE)
    assert sealer is not None
    rows = session.execute(select(Search.id, Search.probes).where(Search.probes.is_not(None))).all()
    if rows:
        session.execute(
            update(Search), [{"id": row.id, "probes": sealer.seal(row.probes, probes_place(row.id))} for row in rows]
        )
    return len(rows)


def rotate(sessions: Sessions, keyring: Keyring, new_master: MasterKey) -> int:
    """Re-wrap every data key with ``new_master``, in one transaction; templates, probes and
    snapshots stay as they are (their data keys do not change). Returns the keys re-wrapped."""
    old_master = keyring.master
    if old_master is None:
        raise MasterKeyMissing("encryption at rest is off or locked: there is nothing to rotate")
    with transaction(sessions) as session:
        now = utcnow()
        stored = list(session.scalars(select(DataKey)))
        for key in stored:
            key.wrapped = new_master.wrap(old_master.unwrap(key.wrapped))
            key.master_key_id, key.wrapped_at = new_master.key_id, now
    keyring.master = new_master
    return len(stored)


def data_keys(sessions: Sessions) -> list[DataKeyView]:
    with sessions() as session:
        return [
            DataKeyView(key.scope, key.master_key_id, key.created_at, key.wrapped_at)
            for key in session.scalars(select(DataKey).order_by(DataKey.scope))
        ]
