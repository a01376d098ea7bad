"""This process's leases on written searches: who it is, which searches it holds, and the
statements that claim, renew and release them.

Several processes, on one node or several, share one search queue: the ``searches`` table. A
written search that a live process holds in memory (queued in its scheduler, or running) carries
that process's lease, renewed by its heartbeat; a search whose lease has lapsed (its process died
or stalled) or was released (its process stopped) may be claimed by any process, earliest
deadline first, with ``SELECT … FOR UPDATE SKIP LOCKED`` so that concurrent claims never wait
for one another nor take the same search. The transaction that ends a search writes only while
the lease is still this process's (app/matching/executor.py), so a search taken over after its
lease lapsed is ended once, by one process.

Lease expiries are compared with each process's own clock: nodes are expected to keep time
(NTP), well within a lease's length. SQLite has no ``SKIP LOCKED`` (SQLAlchemy leaves it out):
there a claim runs in the single writer's ``BEGIN IMMEDIATE``, and one process serves the data
folder (app/core/datalock.py), so leases left by an earlier incarnation are dead and
:func:`forget_dead_leases` frees them at start.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.notify import notify
from app.db.session import Sessions, transaction
from app.matching.models import Search, SearchStatus

CHANNEL = "readmit_search_queue"
"""The PostgreSQL notification channel on which a process says that searches became claimable."""

PENDING = (SearchStatus.QUEUED.value, SearchStatus.RUNNING.value)

RENEWAL_CHUNK = 5000
"""Ids per renewal statement: within SQLite's and PostgreSQL's limits on bound parameters."""


@dataclass(frozen=True)
class Claimed:
    """A search claimed for this process's scheduler; ``taken_over``: from a lapsed lease."""

    search_id: int
    deadline: datetime
    searched_galleries: tuple[int, ...]
    taken_over: bool


class Leases:
    def __init__(self, duration_s: float, owner: str | None = None) -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """Unique to this process's life: a restarted process never mistakes its predecessor's
        leases for its own."""
        self.duration = timedelta(seconds=duration_s)
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def values(self, now: datetime) -> dict[str, Any]:
        """The lease columns of a search this process writes and holds."""
        return {"lease_owner": self.owner, "lease_expires": now + self.duration}

    def hold(self, search_ids: Iterable[int]) -> None:
        with self._lock:
            self._held.update(search_ids)

    def drop(self, search_ids: Iterable[int]) -> None:
        """No longer renew these searches' leases: they ended, or are no longer held in memory
        (a lease left unrenewed lapses, and the search is claimed again)."""
        with self._lock:
            self._held.difference_update(search_ids)

    @property
    def count(self) -> int:
        return len(self._held)

    def claim(self, sessions: Sessions, room: int) -> list[Claimed]:
        """Take up to ``room`` written searches that no live process holds, earliest deadline
        first, and hold them. They are set back to queued: whoever ran them before never ended
        them."""
        if room <= 0:
            return []
        now = utcnow()
        with transaction(sessions) as session:
            connection = session.connection()
            rows = connection.execute(_CLAIMABLE.limit(room), {"now": now}).all()
            if rows:
                connection.execute(_TAKE, {"ids": [row.id for row in rows], **self.values(now)})
        self.hold(row.id for row in rows)
        return [
            Claimed(row.id, row.deadline, tuple(sorted(row.searched_galleries)), row.lease_owner is not None)
            for row in rows
        ]

    def renew(self, sessions: Sessions) -> set[int]:
        """Extend the lease of every search held here (one statement, a chunk of ids at a time);
        returns those whose lease another process took over or that ended meanwhile, now no
        longer held (their batch, if it runs, ends nothing: see the executor's ``_end``)."""
        with self._lock:
            held = sorted(self._held)
        if not held:
            return set()
        expires = utcnow() + self.duration
        renewed: set[int] = set()
        with transaction(sessions) as session:
            connection = session.connection()
            for start in range(0, len(held), RENEWAL_CHUNK):
                chunk = held[start : start + RENEWAL_CHUNK]
                renewed.update(
                    connection.execute(_RENEW, {"ids": chunk, "owner": self.owner, "expires": expires}).scalars()
                )
        with self._lock:
            lost = (set(held) - renewed) & self._held
            self._held -= lost
        return lost

    def release(self, sessions: Sessions) -> int:
        """Give up every lease of this process (it stops): any other may claim those searches at
        once, and is woken to. Returns how many were released."""
        with transaction(sessions) as session:
            released = session.connection().execute(_RELEASE, {"owner": self.owner}).rowcount
            if released:
                notify_claimable(session)
        with self._lock:
            self._held.clear()
        return int(released)


def forget_dead_leases(sessions: Sessions) -> int:
    """Free the leases of every pending search: only when no other process can be alive (SQLite,
    whose data folder this process has locked)."""
    with transaction(sessions) as session:
        return int(session.connection().execute(_FORGET).rowcount)


def notify_claimable(session: Session) -> None:
    """Wake the processes listening (PostgreSQL), when the transaction commits: searches became
    claimable. Elsewhere nothing listens: their claimers poll."""
    notify(session, CHANNEL)


_CLAIMABLE = (
    select(Search.id, Search.deadline, Search.searched_galleries, Search.lease_owner)
    .where(
        Search.status.in_(PENDING),
        or_(Search.lease_owner.is_(None), Search.lease_expires < bindparam("now")),
    )
    .order_by(Search.deadline, Search.id)
    .with_for_update(skip_locked=True)
)
_TAKE = (
    update(Search)
    .where(Search.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=SearchStatus.QUEUED.value,
        started_at=None,
        lease_owner=bindparam("lease_owner"),
        lease_expires=bindparam("lease_expires"),
    )
)
_RENEW = (
    update(Search)
    .where(
        Search.id.in_(bindparam("ids", expanding=True)),
        Search.lease_owner == bindparam("owner"),
        Search.status.in_(PENDING),
    )
    .values(lease_expires=bindparam("expires"))
    .returning(Search.id)
)
_RELEASE = (
    update(Search)
    .where(Search.lease_owner == bindparam("owner"), Search.status.in_(PENDING))
    .values(lease_owner=None, lease_expires=None)
)
_FORGET = (
    update(Search)
    .where(Search.lease_owner.is_not(None), Search.status.in_(PENDING))
    .values(lease_owner=None, lease_expires=None)
)
