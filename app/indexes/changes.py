"""The change feed as the indexes see it: what each committed change transaction of a gallery
did to its records, read from the database's change log (written by app/galleries/changes.py),
and how consecutive changes fold into one index update.

Templates are not in the log: a change names the records it upserted and removed, and whoever
applies it reads the records' current templates. Applying changes in order is then convergent:
a record replaced or deleted again by a later change is read as it is now, and that later
change (applied after) leaves it the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from app.indexes.exceptions import ChangeLogGap

IDS = np.dtype("<i8")
"""How the log stores record ids: little-endian int64, the same bytes on every host."""


def pack_ids(ids: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(ids, dtype=IDS).tobytes()


def unpack_ids(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype=IDS).astype(np.int64)


@dataclass(frozen=True)
class LoggedChange:
    """One row of the change log: after it, each of ``upserted`` has exactly its stored
    templates, and ``removed`` are gone."""

    change_seq: int
    committed_at: datetime
    upserted: np.ndarray
    removed: np.ndarray


@dataclass(frozen=True)
class FoldedChange:
    """Consecutive logged changes as one index update at the last one's number: every record
    they touched leaves the index, and those upserted come back with their current templates."""

    change_seq: int
    touched: np.ndarray
    upserted: np.ndarray


def fold(changes: Sequence[LoggedChange]) -> FoldedChange:
    """``changes`` (consecutive, in order, at least one) as one update: the same index as
    applying them one by one, since every upserted record is read as it is now."""
    touched = np.unique(np.concatenate([np.concatenate((c.upserted, c.removed)) for c in changes]))
    upserted = np.unique(np.concatenate([c.upserted for c in changes]))
    return FoldedChange(changes[-1].change_seq, touched, upserted)


def check_contiguous(changes: Sequence[LoggedChange], after_seq: int, upto_seq: int | None) -> None:
    """Raise ChangeLogGap unless ``changes`` are exactly after_seq+1, after_seq+2, ... (to
    ``upto_seq`` when given)."""
    expected = after_seq + 1
    for change in changes:
        if change.change_seq != expected:
            raise ChangeLogGap(f"the change log has change {change.change_seq} where {expected} was expected")
        expected += 1
    if upto_seq is not None and expected != upto_seq + 1:
        raise ChangeLogGap(f"the change log ends at change {expected - 1}, before {upto_seq}")


UPDATE_IDS = 50_000
"""Record ids folded into one index update at most (unless one change alone has more): a
process catching up on a long absence reads the templates in parts of this many records."""


def in_updates(changes: Sequence[LoggedChange], max_ids: int = UPDATE_IDS) -> Iterator[list[LoggedChange]]:
    """``changes`` cut, in order, into runs of at most ``max_ids`` record ids (one change each
    at least), for :func:`fold`."""
    run: list[LoggedChange] = []
    ids = 0
    for change in changes:
        size = len(change.upserted) + len(change.removed)
        if run and ids + size > max_ids:
            yield run
            run, ids = [], 0
        run.append(change)
        ids += size
    if run:
        yield run


class ChangeFeed(Protocol):
    """The database as the registry and its follower read it (app/galleries/changes.py)."""

    def seqs(self) -> dict[int, int]:
        """Every gallery's id and committed change number, in one cheap query."""

    def changes_after(self, gallery_id: int, after_seq: int, upto_seq: int | None) -> list[LoggedChange]:
        """The logged changes after ``after_seq`` (to ``upto_seq`` when given), in order; raises
        ChangeLogGap unless the log holds every one of them."""

    def current_templates(
        self, gallery_id: int, dimension: int, record_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, templates) of those of ``record_ids`` that exist now, one row per sample."""
