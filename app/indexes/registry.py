"""The matcher index of every gallery, kept in step with the database.

The database is the source of truth; an index is a cache of it, held by the configured backend
(in this process, or over Ray shard actors: :mod:`app.indexes.backends`). At start each gallery's
index is loaded from its snapshot when the snapshot's change sequence and template count match
the database; a snapshot behind the database is loaded and caught up from the change log when
the log holds every change since (and they are fewer than it holds); else the index is rebuilt
from the database and snapshotted again.

One ordering rule for every change, this process's or another's: under the gallery's write lock,
change ``n`` is applied only after ``n - 1``, and never twice. A writer of this process applies
its own change right after its commit (so that it is searchable when the call returns), first
catching up from the log on the changes other processes committed before it; the follower
(app/indexes/follower.py) applies from the log what is not applied yet.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.indexes.backends import IndexBackend, LocalBackend, MatcherIndex, Refill
from app.indexes.changes import ChangeFeed, LoggedChange, fold, in_updates
from app.indexes.exceptions import ChangeLogGap, IndexUnavailable
from app.observability.metrics import IndexSize
from matcher import IndexKind, IndexPolicy, MatcherError, SnapshotError, SnapshotKey, TemplateFormat

log = logging.getLogger(__name__)


@dataclass
class IndexChange:
    """What one committed transaction changed in a gallery: records whose templates are now
    exactly ``templates`` (new or replaced; one row per sample), and records removed."""

    removed: list[int] = field(default_factory=list)
    record_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    templates: np.ndarray | None = None


@dataclass(frozen=True)
class GallerySource:
    """What the registry needs to know of a gallery to build its index."""

    gallery_id: int
    template_format: TemplateFormat
    change_seq: int
    template_count: int


TemplateStream = Callable[[int, int], Iterator[tuple[np.ndarray, np.ndarray]]]
"""(gallery id, dimension) -> chunks of (record ids, templates) read from the database."""


@dataclass
class _Entry:
    index: MatcherIndex
    applied_seq: int
    snapshot_seq: int
    database_seq: int = 0
    """the gallery's change number in the database when last read here"""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def changes_behind(self) -> int:
        return max(0, self.database_seq - self.applied_seq)


SnapshotKeys = Callable[[int], SnapshotKey | None]
"""gallery id -> the key its snapshots are sealed with (None: stored in clear)."""


CATCH_UP_FLOOR = 10_000
"""Records a start may catch up from the log whatever its snapshot holds: beyond both, a
rebuild (one pass over the gallery) costs less than replaying the changes (a bulk load)."""


class IndexRegistry:
    def __init__(
        self,
        index_dir: Path,
        policy: IndexPolicy,
        feed: ChangeFeed,
        backend: IndexBackend | None = None,
        snapshot_keys: SnapshotKeys = lambda gallery_id: None,
        observe_lag: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """``observe_lag``: told, for each change applied from the log after start, the seconds
        from its commit (the writer's clock) to now (this host's)."""
        self.index_dir = index_dir
        self.policy = policy
        self.feed = feed
        self.backend = backend or LocalBackend(policy)
        self.snapshot_keys = snapshot_keys
        self.observe_lag = observe_lag
        self._entries: dict[int, _Entry] = {}
        self._creating: set[int] = set()
        self._guard = threading.Lock()
        self.load_events: list[dict[str, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def snapshot_path(self, gallery_id: int) -> Path:
        return self.index_dir / f"gallery-{gallery_id}.snapshot"

    def open(self, source: GallerySource, stream: TemplateStream) -> str:
        """Load a gallery's index from a current snapshot, or one behind that the change log
        catches up, or rebuild it; returns how ("snapshot", "caught up: changes <from> to <to>
        from the log", "rebuilt: <why>")."""
        path = self.snapshot_path(source.gallery_id)
        refill = self._refill(source, stream)
        index: MatcherIndex | None = None
        try:
            manifest = self.backend.read_manifest(path)
            snapshot_seq, snapshot_templates = manifest["change_seq"], manifest["template_count"]
            if snapshot_seq > source.change_seq or (
                snapshot_seq == source.change_seq and snapshot_templates != source.template_count
            ):
                how = (
                    f"rebuilt: stale snapshot (seq {snapshot_seq} vs {source.change_seq}, "
                    f"{snapshot_templates} vs {source.template_count} templates)"
                )
            elif TemplateFormat.from_dict(manifest["template_format"]) != source.template_format:
                how = "rebuilt: snapshot of another template format"
            elif snapshot_seq < source.change_seq:
                index, how = self._load_and_catch_up(source, path, refill, snapshot_seq, snapshot_templates)
            else:
                key = self.snapshot_keys(source.gallery_id)
                index, how = self.backend.load(source.gallery_id, path, refill, key), "snapshot"
        except FileNotFoundError:
            how = "rebuilt: no snapshot"
        except (SnapshotError, KeyError, ValueError, TypeError) as error:
            how = f"rebuilt: corrupt snapshot ({error})"
        if index is None:
            index = self._rebuild(source, refill)
        if how != "snapshot":  # what opened the index leaves a current snapshot (`readmit enrol`)
            index.save(path, source.change_seq)
        with self._guard:
            self._entries[source.gallery_id] = _Entry(index, source.change_seq, source.change_seq, source.change_seq)
        event = {
            "gallery_id": source.gallery_id,
            "source": how,
            "templates": index.template_count,
            "kind": index.kind.value,
        }
        self.load_events.append(event)
        log.log(logging.WARNING if how.startswith("rebuilt") else logging.INFO, "index loaded", extra={"event": event})
        return how

    def _load_and_catch_up(
        self, source: GallerySource, path: Path, refill: Refill, snapshot_seq: int, snapshot_templates: int
    ) -> tuple[MatcherIndex | None, str]:
        """The snapshot brought to ``source.change_seq`` by the log, and how; (None, why) when it
        cannot be: the log lacks changes, holds more than the snapshot, or ends elsewhere than
        the database."""
        stale = f"stale snapshot (seq {snapshot_seq} vs {source.change_seq})"
        try:
            changes = self.feed.changes_after(source.gallery_id, snapshot_seq, source.change_seq)
        except ChangeLogGap:
            return None, f"rebuilt: {stale}, not covered by the change log"
        touched = len(fold(changes).touched)
        if touched > max(snapshot_templates, CATCH_UP_FLOOR):
            return None, f"rebuilt: {stale}, {touched} records changed since"
        index = self.backend.load(source.gallery_id, path, refill, self.snapshot_keys(source.gallery_id))
        self._apply_logged(source.gallery_id, index, changes)
        if index.template_count != source.template_count:
            index.close()
            return None, (
                f"rebuilt: {stale}, caught up to {index.template_count} templates where the database has "
                f"{source.template_count}"
            )
        return index, f"caught up: changes {snapshot_seq + 1} to {source.change_seq} from the log"

    @contextmanager
    def creating(self, gallery_id: int) -> Iterator[None]:
        """While this process commits a new gallery, and until :meth:`create_empty` gives it its
        index, the follower leaves it alone (it would build a second one)."""
        with self._guard:
            self._creating.add(gallery_id)
        try:
            yield
        finally:
            with self._guard:
                self._creating.discard(gallery_id)

    def is_being_created(self, gallery_id: int) -> bool:
        return gallery_id in self._creating

    def create_empty(self, gallery_id: int, template_format: TemplateFormat) -> None:
        """A gallery just created: empty at change 0, for every backend."""
        index = self.backend.create(
            gallery_id,
            template_format,
            self.snapshot_path(gallery_id),
            lambda: iter(()),
            empty_seq=0,
            key=self.snapshot_keys(gallery_id),
        )
        with self._guard:
            self._entries[gallery_id] = _Entry(index, 0, -1)

    def check_room(self) -> None:
        """Raise ShardsUnplaceable before a new gallery is stored if its index would not fit."""
        self.backend.check_room()

    @staticmethod
    def _refill(source: GallerySource, stream: TemplateStream) -> Refill:
        return lambda: stream(source.gallery_id, source.template_format.dimension)

    def _rebuild(self, source: GallerySource, refill: Refill) -> MatcherIndex:
        path = self.snapshot_path(source.gallery_id)
        key = self.snapshot_keys(source.gallery_id)
        index = self.backend.create(source.gallery_id, source.template_format, path, refill, empty_seq=None, key=key)
        for record_ids, templates in refill():
            index.add(record_ids, templates)
        return index

    def rebuild(self, source: GallerySource, stream: TemplateStream, kind: IndexKind | None = None) -> None:
        """Rebuild from the database, under the gallery's write lock when it is loaded."""
        entry = self._entries.get(source.gallery_id)
        with entry.lock if entry is not None else nullcontext():
            index = self._rebuild(source, self._refill(source, stream))
            if kind is not None:
                index.rebuild(kind)
            index.save(self.snapshot_path(source.gallery_id), source.change_seq)
            with self._guard:
                self._entries[source.gallery_id] = _Entry(
                    index, source.change_seq, source.change_seq, source.change_seq
                )
            if entry is not None:
                entry.index.close()

    def close_all(self) -> None:
        """Release every index (a sharded gallery's actors stop)."""
        with self._guard:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.index.close()

    # -- use --------------------------------------------------------------------------------------

    def get(self, gallery_id: int) -> MatcherIndex:
        entry = self._entries.get(gallery_id)
        if entry is None:
            raise IndexUnavailable(f"the index of gallery {gallery_id} is not loaded")
        return entry.index

    def is_loaded(self, gallery_id: int) -> bool:
        return gallery_id in self._entries

    def sizes(self) -> list[IndexSize]:
        """Every loaded index, for metrics."""
        return [
            IndexSize(
                gid,
                e.index.kind.value,
                e.index.template_count,
                e.index.shard_count,
                len(e.index.unavailable_shards()),
                e.changes_behind,
            )
            for gid, e in list(self._entries.items())
        ]

    def loaded_ids(self) -> list[int]:
        return sorted(self._entries)

    @contextmanager
    def writing(self, gallery_id: int, before_waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Serialise a gallery's changes from database transaction to index update.
        ``before_waiting`` is called first if another holds the gallery (a writer's transaction,
        a snapshot being saved: seconds for a large gallery)."""
        with self._guard:
            entry = self._entries.get(gallery_id)
        if entry is None:
            raise IndexUnavailable(f"the index of gallery {gallery_id} is not loaded")
        if not entry.lock.acquire(blocking=False):
            if before_waiting is not None:
                before_waiting()
            entry.lock.acquire()
        try:
            yield
        finally:
            entry.lock.release()

    def apply(self, gallery_id: int, change_seq: int, change: IndexChange) -> None:
        """Apply this process's change ``change_seq`` right after its commit; call inside
        :meth:`writing`. Changes before it that other processes committed are applied first,
        from the log."""
        self.catch_up(gallery_id, change_seq - 1)
        entry = self._entries[gallery_id]
        entry.index.apply(change_seq, change.removed, change.record_ids, change.templates)
        entry.applied_seq = change_seq
        entry.database_seq = max(entry.database_seq, change_seq)

    def catch_up(self, gallery_id: int, database_seq: int) -> int:
        """Apply from the log every change up to ``database_seq`` (the gallery's number as the
        database has it) not applied yet; call inside :meth:`writing`. Returns how many."""
        entry = self._entries[gallery_id]
        entry.database_seq = max(entry.database_seq, database_seq)
        if entry.applied_seq >= database_seq:
            return 0
        changes = self.feed.changes_after(gallery_id, entry.applied_seq, database_seq)
        self._apply_logged(gallery_id, entry.index, changes, entry)
        now = datetime.now(UTC)
        for change in changes:
            self.observe_lag(max(0.0, (now - change.committed_at).total_seconds()))
        return len(changes)

    def is_behind(self, gallery_id: int, database_seq: int) -> bool:
        """Whether the gallery's index has not applied ``database_seq`` yet (read without its
        lock: :meth:`catch_up` checks again under it)."""
        entry = self._entries[gallery_id]
        entry.database_seq = max(entry.database_seq, database_seq)
        return entry.applied_seq < database_seq

    def _apply_logged(
        self, gallery_id: int, index: MatcherIndex, changes: list[LoggedChange], entry: _Entry | None = None
    ) -> None:
        """Apply logged changes in order, several at a time: each group's records leave the
        index and those upserted come back as the database holds them now."""
        for group in in_updates(changes):
            folded = fold(group)
            record_ids, templates = self.feed.current_templates(gallery_id, index.format.dimension, folded.upserted)
            index.apply(folded.change_seq, folded.touched, record_ids, templates if len(record_ids) else None)
            if entry is not None:
                entry.applied_seq = folded.change_seq

    @contextmanager
    def snapshot_lock(self, gallery_id: int) -> Iterator[None]:
        """Hold the gallery's snapshot file against the other processes serving this data folder
        (``serve --processes N``): one rebuilds or writes it while the others wait, then load it."""
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / f"gallery-{gallery_id}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def snapshot(self, gallery_id: int, force: bool = False) -> bool:
        """Save the gallery's snapshot if it changed since the last one and no other process of
        this data folder saved as recent a one; True if written."""
        with self.writing(gallery_id), self.snapshot_lock(gallery_id):
            entry = self._entries[gallery_id]
            if not force and entry.applied_seq == entry.snapshot_seq:
                return False
            path = self.snapshot_path(gallery_id)
            if not force and self._saved_seq(path) >= entry.applied_seq:
                entry.snapshot_seq = entry.applied_seq
                return False
            entry.index.save(path, entry.applied_seq)
            entry.snapshot_seq = entry.applied_seq
            return True

    def _saved_seq(self, path: Path) -> int:
        """The change the snapshot on disk is at (-1: none readable)."""
        try:
            return int(self.backend.read_manifest(path)["change_seq"])
        except (FileNotFoundError, SnapshotError, KeyError, ValueError, TypeError):
            return -1

    def snapshot_all(self) -> list[int]:
        """Snapshot every changed index; one that cannot be (a shard down) is logged and left to
        the next pass, and its changes stay covered by the database and the shards' journal."""
        written = []
        for gid in self.loaded_ids():
            try:
                if self.snapshot(gid):
                    written.append(gid)
            except MatcherError as error:
                log.error("snapshot failed", extra={"event": {"gallery_id": gid, "reason": error.code}})
        return written
