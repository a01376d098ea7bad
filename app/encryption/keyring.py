"""The data keys a process has unwrapped, shared by every session of its database.

A keyring travels with the session factory (``session.info``), as the engine does: every unit of
work that reads or writes a template or a probe holds a session, and the keys belong to the
database that session opens, not to any one use case. Data keys are unwrapped once (the master
key may be a remote KMS or an HSM) and kept in memory, which is what encryption at rest allows:
it protects copies of the files, not a running host.
"""

from __future__ import annotations

import hashlib
import threading

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.base import utcnow
from app.encryption.exceptions import EncryptionOff, MasterKeyMissing, WrongMasterKey
from app.encryption.master import MasterKey, random_key
from app.encryption.models import DataKey
from app.encryption.sealing import Sealer
from matcher import SnapshotKey

PROBES_SCOPE = "probes"
_MADE = "data_keys_made"
"""Where a session keeps the data keys it made until its transaction commits."""


def gallery_scope(gallery_id: int) -> str:
    return f"gallery/{gallery_id}"


class Keyring:
    """Encryption on (``enabled``) seals every new template and probe and needs the master key
    (:meth:`unlock`) before any is read; off, values are stored and read in clear, and a
    database holding sealed values is refused."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.master: MasterKey | None = None
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @staticmethod
    def of(session: Session) -> Keyring:
        keyring = session.info.get("keyring")
        if not isinstance(keyring, Keyring):
            raise RuntimeError("this session's factory has no keyring (Runtime.create installs one)")
        return keyring

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Make this keyring every session's of ``sessions``. A data key made in a transaction
        is kept only once that transaction commits: a key remembered from a rolled back one
        would seal values that nothing could open after a restart."""
        sessions.configure(info={"keyring": self})
        event.listen(sessions, "after_commit", self._committed)
        event.listen(sessions, "after_soft_rollback", lambda session, _: session.info.pop(_MADE, None))

    def _committed(self, session: Session) -> None:
        made = session.info.pop(_MADE, None)
        if made:
            with self._lock:
                self._keys.update(made)

    def unlock(self, session: Session, master: MasterKey | None) -> None:
        """Unwrap every stored data key with ``master``; refuse a wrong or missing key (and
        sealed data with encryption off) before anything is served."""
        stored = list(session.scalars(select(DataKey)))
        if not self.enabled:
            if stored:
                raise EncryptionOff(
                    f"encryption at rest is off (READMIT_ENCRYPT_AT_REST) but {len(stored)} data key(s) "
                    "protect sealed templates or probes: turn it on and give the master key"
                )
            return
        if master is None:
            raise MasterKeyMissing("encryption at rest is on and no master key is configured")
        others = sorted({key.master_key_id for key in stored} - {master.key_id})
        if others:
            raise WrongMasterKey(
                f"the data keys are wrapped by master key {', '.join(others)}, "
                f"and the configured master key is {master.key_id}"
            )
        keys = {key.scope: master.unwrap(key.wrapped) for key in stored}
        with self._lock:
            self.master, self._keys = master, keys

    def sealer(self, session: Session, scope: str) -> Sealer | None:
        """The sealer of ``scope``'s values, its data key made (in ``session``'s transaction)
        if it has none yet; None with encryption off."""
        if not self.enabled:
            return None
        with self._lock:
            key = self._keys.get(scope)
        if key is None:
            key = session.info.get(_MADE, {}).get(scope) or self._load_or_make(session, scope)
        return Sealer(key)

    def ensure_key(self, session: Session, scope: str) -> None:
        """Give ``scope`` its data key now, in ``session``'s transaction: a new gallery's
        snapshots are sealed before its first template is."""
        self.sealer(session, scope)

    def snapshot_key(self, gallery_id: int) -> SnapshotKey | None:
        """The key a gallery's snapshots are sealed with, named after the data key (a hash of
        it, which reveals nothing of it) so that a snapshot left by another database is told
        apart; None with encryption off. Every gallery's data key is unwrapped at start or
        made with the gallery, so a missing one is an error, never a clear snapshot."""
        if not self.enabled:
            return None
        scope = gallery_scope(gallery_id)
        with self._lock:
            key = self._keys.get(scope)
        if key is None:
            raise WrongMasterKey(f"no data key unwrapped for {scope}")
        return SnapshotKey(f"{scope}:{hashlib.sha256(key).hexdigest()[:16]}", key)

    def learn(self, session: Session, scope: str) -> None:
        """Unwrap ``scope``'s data key if another process stored it since this one unlocked (a
        gallery created there, whose index this process is about to open)."""
        if self.enabled:
            with self._lock:
                known = scope in self._keys
            if not known:
                self._load(session, scope)

    def _load(self, session: Session, scope: str) -> bytes | None:
        """The stored data key of ``scope``, unwrapped and kept; None if there is none."""
        stored = session.get(DataKey, scope)
        if stored is None:
            return None
        key = self._unlocked().unwrap(stored.wrapped)
        with self._lock:
            self._keys[scope] = key
        return key

    def _load_or_make(self, session: Session, scope: str) -> bytes:
        master = self._unlocked()
        stored = self._load(session, scope)  # committed by another process since this one unlocked
        if stored is not None:
            return stored
        key = random_key()
        now = utcnow()
        session.add(
            DataKey(scope=scope, wrapped=master.wrap(key), master_key_id=master.key_id, created_at=now, wrapped_at=now)
        )
        session.flush()
        session.info.setdefault(_MADE, {})[scope] = key
        return key

    def _unlocked(self) -> MasterKey:
        if self.master is None:
            raise MasterKeyMissing("the keyring is not unlocked: no master key was given at start")
        return self.master
