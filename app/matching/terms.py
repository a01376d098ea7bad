"""What an identification's admission reads: its case's terms, the agreements in force between
the case's state and the countries searched, and those countries' galleries. Read from the
database, or from a process-wide cache of them.

Three queries and a worker thread to run them were a fifth of an identification's time in the
service (py-spy, 1M SQLite, 32 clients). Served from the cache, an admission touches no database,
so it runs where the request arrived, with no thread hop.

**When a change is seen.** Every committed change to a case's row, to any agreement, and every
gallery created or deleted, through this process, empties the cache (app/db/watch.py sees every
statement of the engine, whichever use case wrote it). An entry is tagged with the cache's
generation when its read began, and the emptying bumps the generation before the change commits
and again once it has: a read that raced the commit is never kept. Changes made by other
processes or nodes on one PostgreSQL (``--processes N``, several nodes) empty it when their
notification arrives (on ``CHANNEL``, sent by the changing transaction and delivered at its
commit), and in any case once an entry ages out (``READMIT_KEY_CACHE_S``, as revoked API keys
are): should a notification be lost, that bounds how long another process may still admit
searches of a case just closed there, or under an agreement just ended. A case's deadline is
checked against the clock at each admission, never cached as a verdict. Bounded: the least
recently used entries go first.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import date
from typing import Any, Protocol, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.agreements.service import countries_in_force
from app.cases.service import CaseTerms, case_terms, visible_to
from app.core.cache import CommittedRowsCache, NotCached
from app.galleries.models import Gallery
from app.galleries.service import Formatted
from app.principals.models import Principal

WATCHED = {
    "cases": {"update", "delete"},
    "agreements": {"insert", "update", "delete"},
    "galleries": {"insert", "delete"},
}
"""The writes that change what an admission reads (a new case is not in the cache yet; a
gallery's other updates are its enrolments)."""

CHANNEL = "readmit_admission_terms"
"""PostgreSQL: notified by every transaction that made such a write."""


class GalleryTerms(Formatted, Protocol):
    @property
    def id(self) -> int: ...
    @property
    def country(self) -> str: ...


class Terms(Protocol):
    """Where an admission reads its terms."""

    def case(self, actor: Principal, case_id: int) -> CaseTerms: ...
    def countries_in_force(self, receiving: str, origins: Sequence[str], modality: str, day: date) -> set[str]: ...
    def galleries(self, countries: Sequence[str], modality: str, model: str) -> Sequence[GalleryTerms]: ...


class DatabaseTerms:
    """The terms as ``session`` reads them."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def case(self, actor: Principal, case_id: int) -> CaseTerms:
        return visible_to(case_terms(self.session, case_id), actor, case_id)

    def countries_in_force(self, receiving: str, origins: Sequence[str], modality: str, day: date) -> set[str]:
        return countries_in_force(self.session, receiving, list(origins), modality, day)

    def galleries(self, countries: Sequence[str], modality: str, model: str) -> Sequence[GalleryTerms]:
        parameters = {"countries": sorted(countries), "modality": modality, "model": model}
        return list(self.session.connection().execute(_GALLERIES_OF, parameters))


_GALLERIES_OF = select(Gallery.id, Gallery.country, Gallery.model, Gallery.dimension, Gallery.metric).where(
    Gallery.country.in_(bindparam("countries", expanding=True)),
    Gallery.modality == bindparam("modality"),
    Gallery.model == bindparam("model"),
)


T = TypeVar("T")


class CachedTerms:
    """The terms from ``cache``; on a miss, from ``database`` (kept for the next admission), or
    :class:`NotCached` without one."""

    def __init__(self, cache: CommittedRowsCache, database: DatabaseTerms | None = None) -> None:
        self.cache, self.database = cache, database

    def case(self, actor: Principal, case_id: int) -> CaseTerms:
        terms = self._read(("case", case_id), lambda db: case_terms(db.session, case_id))
        return visible_to(terms, actor, case_id)

    def countries_in_force(self, receiving: str, origins: Sequence[str], modality: str, day: date) -> set[str]:
        key = ("agreements", receiving, tuple(origins), modality, day)
        return set(self._read(key, lambda db: frozenset(db.countries_in_force(receiving, origins, modality, day))))

    def galleries(self, countries: Sequence[str], modality: str, model: str) -> Sequence[GalleryTerms]:
        key = ("galleries", tuple(sorted(countries)), modality, model)
        return self._read(key, lambda db: tuple(db.galleries(countries, modality, model)))

    def _read(self, key: Hashable, read: Any) -> Any:
        try:
            return self.cache.get(key)
        except NotCached:
            if self.database is None:
                raise
        generation = self.cache.generation
        value = read(self.database)
        if value is not None:  # a case not found: not kept (it may be created, by another process too)
            self.cache.put(key, value, generation)
        return value
