"""The matcher index of every gallery, kept in step with the database.

The database is the source of truth; an index is a cache of it, held by the configured backend
(in this process, or over Ray shard actors: :mod:`app.indexes.backends`). At start each gallery's index is
loaded from its snapshot when the snapshot's change sequence and template count match the
database, else rebuilt from the database and snapshotted again. Changes are applied after their
transaction commits, under the gallery's write lock, so the index sees them in commit order.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.indexes.backends import IndexBackend, LocalBackend, MatcherIndex, Refill
from app.indexes.exceptions import IndexUnavailable
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
    lock: threading.Lock = field(default_factory=threading.Lock)


SnapshotKeys = Callable[[int], SnapshotKey | None]
"""gallery id -> the key its snapshots are sealed with (None: stored in clear)."""


class IndexRegistry:
    def __init__(
        self,
        index_dir: Path,
        policy: IndexPolicy,
        backend: IndexBackend | None = None,
        snapshot_keys: SnapshotKeys = lambda gallery_id: None,
    ) -> None:
        self.index_dir = index_dir
        self.policy = policy
        self.backend = backend or LocalBackend(policy)
        self.snapshot_keys = snapshot_keys
        self._entries: dict[int, _Entry] = {}
        self._guard = threading.Lock()
        self.load_events: list[dict[str, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def snapshot_path(self, gallery_id: int) -> Path:
        return self.index_dir / f"gallery-{gallery_id}.snapshot"

    def open(self, source: GallerySource, stream: TemplateStream) -> str:
        """Load a gallery's index from a current snapshot or rebuild it; returns how
        ("snapshot", "rebuilt: <why>")."""
        path = self.snapshot_path(source.gallery_id)
        refill = self._refill(source, stream)
        index: MatcherIndex | None = None
        try:
            manifest = self.backend.read_manifest(path)
            if manifest["change_seq"] != source.change_seq or manifest["template_count"] != source.template_count:
                how = (
                    f"rebuilt: stale snapshot (seq {manifest['change_seq']} vs {source.change_seq}, "
                    f"{manifest['template_count']} vs {source.template_count} templates)"
                )
            elif TemplateFormat.from_dict(manifest["template_format"]) != source.template_format:
                how = "rebuilt: snapshot of another template format"
            else:
                key = self.snapshot_keys(source.gallery_id)
                index, how = self.backend.load(source.gallery_id, path, refill, key), "snapshot"
        except FileNotFoundError:
            how = "rebuilt: no snapshot"
        except (SnapshotError, KeyError, ValueError, TypeError) as error:
            how = f"rebuilt: corrupt snapshot ({error})"
        if index is None:
            index = self._rebuild(source, refill)
            index.save(path, source.change_seq)
        with self._guard:
            self._entries[source.gallery_id] = _Entry(index, source.change_seq, source.change_seq)
        event = {
            "gallery_id": source.gallery_id,
            "source": how,
            "templates": index.template_count,
            "kind": index.kind.value,
        }
        self.load_events.append(event)
        log.log(logging.INFO if how == "snapshot" else logging.WARNING, "index loaded", extra={"event": event})
        return how

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
                self._entries[source.gallery_id] = _Entry(index, source.change_seq, source.change_seq)
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
                gid, e.index.kind.value, e.index.template_count, e.index.shard_count, len(e.index.unavailable_shards())
            )
            for gid, e in list(self._entries.items())
        ]

    def loaded_ids(self) -> list[int]:
        return sorted(self._entries)

    @contextmanager
    def writing(self, gallery_id: int) -> Iterator[None]:
        """Serialise a gallery's changes from database transaction to index update."""
        with self._guard:
            entry = self._entries.get(gallery_id)
        if entry is None:
            raise IndexUnavailable(f"the index of gallery {gallery_id} is not loaded")
        with entry.lock:
            yield

    def apply(self, gallery_id: int, change_seq: int, change: IndexChange) -> None:
        """Apply a committed change; call inside :meth:`writing`."""
        entry = self._entries[gallery_id]
        entry.index.apply(change_seq, change.removed, change.record_ids, change.templates)
        entry.applied_seq = change_seq

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
