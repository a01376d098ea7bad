"""A gallery's matcher index: add, replace, remove and search templates of one format.

Readers (searches) run concurrently, FAISS releasing the GIL; writers (add, replace, remove,
rebuild) take a writer-preferring readers-writer lock, so a search never sees a half-applied
write and a stream of searches cannot starve enrolment. benchmarks/matcher_bench.py measures
search latency with and without a concurrent writer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt
from readerwriterlock import rwlock

from matcher.errors import InvalidTemplateError, SnapshotError
from matcher.formats import TemplateFormat
from matcher.fusion import SearchResult, fuse_per_record
from matcher.sealing import SnapshotKey
from matcher.shortlist import ShortlistIndex
from matcher.snapshot import PlainCopies, Section, SnapshotReader, write_snapshot
from matcher.store import TemplateStore
from matcher.tuning import configure_faiss, use_threads_for
from matcher.validation import prepare_ids, prepare_templates

Searcher = Callable[[np.ndarray, int], SearchResult]
"""(probes, k) -> top-k records per probe: a gallery's search, local or sharded."""


class IndexKind(enum.StrEnum):
    """``exact``: flat scan of float32 templates. ``pq_fastscan``: PQ fast-scan shortlist of
    compressed codes, re-ranked exactly from the float32 store."""

    EXACT = "exact"
    PQ_FASTSCAN = "pq_fastscan"


@dataclass(frozen=True)
class IndexPolicy:
    """When to leave exact search, and how the approximate path is tuned.

    A gallery switches to ``pq_fastscan`` when it grows past ``exact_max_templates`` and back to
    ``exact`` when it shrinks below half of that (hysteresis, so that a gallery at the boundary
    does not retrain at every write). ``forced_kind`` pins the kind whatever the size.
    """

    exact_max_templates: int = 200_000
    shortlist_length: int = 1000
    training_sample: int = 65_536
    forced_kind: IndexKind | None = None


class GalleryIndex:
    """All templates of one gallery, searchable per record with exact scores."""

    def __init__(self, template_format: TemplateFormat, policy: IndexPolicy | None = None) -> None:
        configure_faiss()  # every search path goes through an index, made here or by load
        self.format = template_format
        self.policy = policy or IndexPolicy()
        self._store = TemplateStore(template_format)
        self._shortlist: ShortlistIndex | None = None
        self._max_samples = 1
        self._lock = rwlock.RWLockWrite()
        self.change_seq = 0
        """The caller's number of the last change applied (see :meth:`apply`, :meth:`save`)."""

    # -- reading -----------------------------------------------------------------------------

    @property
    def kind(self) -> IndexKind:
        return IndexKind.EXACT if self._shortlist is None else IndexKind.PQ_FASTSCAN

    @property
    def template_count(self) -> int:
        return self._store.size

    @property
    def record_count(self) -> int:
        with self._lock.gen_rlock():
            return int(np.unique(self._store.labels).size)

    def record_ids(self) -> np.ndarray:
        """The distinct record ids present, sorted."""
        with self._lock.gen_rlock():
            return np.unique(self._store.labels)

    def search(self, probes: npt.ArrayLike, k: int, probe_groups: npt.ArrayLike | None = None) -> SearchResult:
        """Top-``k`` records per query with exact scores, best first.

        ``probes`` is (n, d); each row is its own query unless ``probe_groups`` gives, per probe,
        the query it belongs to (several samples of one person): the queries are then numbered
        0..max(group), and a record's score is its best over probe x record samples.
        """
        if k < 1:
            raise InvalidTemplateError(f"k must be at least 1, got {k}")
        prepared = prepare_templates(probes, self.format, what="probe")
        if probe_groups is None:
            groups = np.arange(prepared.shape[0], dtype=np.int64)
        else:
            groups = prepare_ids(probe_groups, prepared.shape[0], what="probe group")
        n_queries = int(groups.max()) + 1
        use_threads_for(prepared.shape[0])
        with self._lock.gen_rlock():
            if self._store.size == 0:
                return fuse_per_record(
                    np.empty((prepared.shape[0], 0), np.int64),
                    np.empty((prepared.shape[0], 0), np.float32),
                    groups,
                    n_queries,
                    k,
                )
            hits = k * self._max_samples
            unique = self._max_samples == 1
            if self._shortlist is None:
                labels, scores = self._store.search(prepared, hits)
            else:
                length = max(hits, self.policy.shortlist_length)
                labels, scores = self._shortlist.search(prepared, length, self._store.rescore)
        return fuse_per_record(labels, scores, groups, n_queries, k, unique_labels=unique)

    def score_record(self, record_id: int, probes: npt.ArrayLike) -> float | None:
        """Verification (1:1): the best score of ``probes`` against one record's samples, exact,
        or None when the record is not in the gallery."""
        prepared = prepare_templates(probes, self.format, what="probe")
        with self._lock.gen_rlock():
            rows = self._store.rows_of(np.array([record_id], dtype=np.int64))
            if rows.size == 0:
                return None
            grid = np.broadcast_to(rows, (prepared.shape[0], rows.size))
            _, scores = self._store.rescore(prepared, np.ascontiguousarray(grid))
        return float(scores.max())

    def sample_templates(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``count`` enrolled templates drawn at random, with their record ids."""
        with self._lock.gen_rlock():
            size = self._store.size
            rows = np.random.default_rng(seed).choice(size, size=min(count, size), replace=False)
            return self._store.labels[rows], self._store.take(rows)

    def nonmated_top_scores(self, searches: int, seed: int = 0) -> np.ndarray:
        """Best non-mated score of ``searches`` leave-one-out searches (see
        :func:`leave_one_out_top_scores`)."""
        return leave_one_out_top_scores(self.search, *self.sample_templates(searches, seed))

    def nonmated_pair_scores(self, pairs: int, seed: int = 0) -> np.ndarray:
        """Scores of random pairs of templates of different records: the non-mated comparison
        scores (1:1) from which a threshold at a target FMR is read."""
        with self._lock.gen_rlock():
            size = self._store.size
            if size < 2:
                return np.empty(0, dtype=np.float32)
            rng = np.random.default_rng(seed)
            left, right = rng.integers(0, size, pairs), rng.integers(0, size, pairs)
            keep = self._store.labels[left] != self._store.labels[right]
            left, right = left[keep], right[keep]
            chunks = []
            for start in range(0, left.size, 8192):  # bounded memory: 8192 probes at a time
                probes = self._store.take(left[start : start + 8192])
                chunks.append(self._store.rescore(probes, right[start : start + 8192, None])[1].ravel())
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.float32)

    # -- writing -----------------------------------------------------------------------------

    def add(self, record_ids: npt.ArrayLike, templates: npt.ArrayLike) -> None:
        """Append templates, ``record_ids[i]`` naming the record of template ``i``. A record may
        already have samples: these are added to them. Validation happens before any change."""
        prepared = prepare_templates(templates, self.format)
        labels = prepare_ids(record_ids, prepared.shape[0])
        with self._lock.gen_wlock():
            self._append(labels, prepared)
            self._adjust_kind()

    def replace(self, record_ids: npt.ArrayLike, templates: npt.ArrayLike) -> None:
        """Make the given templates the only samples of their records, in one atomic step
        (re-enrolment of a changed record)."""
        prepared = prepare_templates(templates, self.format)
        labels = prepare_ids(record_ids, prepared.shape[0])
        with self._lock.gen_wlock():
            self._remove_rows(self._store.rows_of(np.unique(labels)))
            self._append(labels, prepared)
            self._adjust_kind()

    def apply(
        self, change_seq: int, removed: npt.ArrayLike, record_ids: npt.ArrayLike, templates: npt.ArrayLike | None
    ) -> None:
        """Apply the caller's change number ``change_seq``: remove records, then make
        ``templates`` the samples of ``record_ids``. Both steps are idempotent, so replaying a
        change is harmless."""
        removed_ids = np.asarray(removed, dtype=np.int64)
        if removed_ids.size:
            self.remove(removed_ids)
        if templates is not None:
            self.replace(record_ids, templates)
        self.change_seq = change_seq

    def remove(self, record_ids: npt.ArrayLike) -> int:
        """Remove every sample of the given records; returns how many templates went."""
        ids = prepare_ids(record_ids)
        with self._lock.gen_wlock():
            rows = self._store.rows_of(ids)
            self._remove_rows(rows)
            self._adjust_kind()
        return int(rows.size)

    def rebuild(self, kind: IndexKind | None = None) -> None:
        """Rebuild the search structure, pinning ``kind`` if given (None: choose by size)."""
        with self._lock.gen_wlock():
            self.policy = replace(self.policy, forced_kind=kind)
            self._max_samples = _max_samples_per_record(self._store.labels)
            self._shortlist = None
            self._adjust_kind()

    # -- internals, called with the write lock held -------------------------------------------

    def _append(self, labels: np.ndarray, templates: np.ndarray) -> None:
        self._store.add(labels, templates)
        if self._shortlist is not None:
            self._shortlist.add(templates, self._store.vectors)
        self._max_samples = max(self._max_samples, _max_samples_per_record(self._store.labels, labels))

    def _remove_rows(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        self._store.remove_rows(rows)
        if self._shortlist is not None:
            self._shortlist.remove_rows(rows, self._store.vectors)

    def _wanted_kind(self) -> IndexKind:
        if self.policy.forced_kind is not None:
            return self.policy.forced_kind
        size, limit = self._store.size, self.policy.exact_max_templates
        if self._shortlist is None:
            return IndexKind.PQ_FASTSCAN if size > limit else IndexKind.EXACT
        return IndexKind.EXACT if size < limit // 2 else IndexKind.PQ_FASTSCAN

    def _adjust_kind(self) -> None:
        wanted = self._wanted_kind()
        if wanted is self.kind:
            return
        if wanted is IndexKind.EXACT or self._store.size == 0:
            self._shortlist = None
        else:
            self._shortlist = ShortlistIndex.build(self.format, self._store.vectors(), self.policy.training_sample)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: Path, change_seq: int, key: SnapshotKey | None = None) -> None:
        """Write an atomic snapshot, sealed with ``key`` when given; ``change_seq`` is the
        caller's sequence number of the last change included, so that a stale snapshot can be
        told from a current one."""
        with self._lock.gen_rlock():
            manifest = {
                "template_format": self.format.to_dict(),
                "kind": self.kind.value,
                "forced_kind": None if self.policy.forced_kind is None else self.policy.forced_kind.value,
                "template_count": self._store.size,
                "record_count": int(np.unique(self._store.labels).size),
                "max_samples": self._max_samples,
                "change_seq": int(change_seq),
            }
            sections: list[tuple[str, Section]] = [
                ("labels", self._store.labels),
                ("templates", [rows for _, rows in self._store.segments()] or [self._store.vectors()]),
            ]
            if self._shortlist is not None:
                parts = self._shortlist.serialize()
                manifest["shortlist_parts"] = len(parts)
                sections += [(f"shortlist.{i}", part) for i, part in enumerate(parts)]
            write_snapshot(path, manifest, sections, key)
            self.change_seq = int(change_seq)

    @classmethod
    def load(
        cls,
        path: Path,
        policy: IndexPolicy | None = None,
        key: SnapshotKey | None = None,
        plain_copies: PlainCopies | None = None,
    ) -> Self:
        """Load a snapshot written by :meth:`save` (with the same ``key``); raises SnapshotError
        unless it is intact. A sealed one is decrypted into ``plain_copies`` when given (one
        copy a node, see :mod:`matcher.plain_copies`), else into this process's memory."""
        with SnapshotReader(path, key, plain_copies) as reader:
            manifest = reader.manifest
            try:
                template_format = TemplateFormat.from_dict(manifest["template_format"])
                forced = manifest["forced_kind"]
                base = policy or IndexPolicy()
                pinned = base.forced_kind or (None if forced is None else IndexKind(forced))
                gallery = cls(template_format, replace(base, forced_kind=pinned))
                labels = reader.read("labels")
                templates = reader.map("templates")
                shortlist = (
                    None
                    if manifest["kind"] == IndexKind.EXACT.value
                    else [reader.read(f"shortlist.{i}") for i in range(manifest["shortlist_parts"])]
                )
                reader.verify()
            except (KeyError, ValueError, TypeError) as error:
                raise SnapshotError(f"{path}: inconsistent manifest: {error}") from error
        if labels.size != manifest["template_count"] or templates.shape != (labels.size, template_format.dimension):
            raise SnapshotError(f"{path}: manifest count does not match the data")
        gallery._store.attach(labels, templates)
        gallery._shortlist = None if shortlist is None else ShortlistIndex.deserialize(shortlist)
        gallery._max_samples = int(manifest["max_samples"])
        gallery.change_seq = int(manifest["change_seq"])
        return gallery


def leave_one_out_top_scores(search: Searcher, own_labels: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """Best non-mated score of leave-one-out searches: enrolled samples searched against their
    gallery with their own record excluded.

    This is the gallery's own open-set non-mated distribution (ISO/IEC 19795-1): a threshold at
    FPIR f is the score that a fraction f of these reach, measured in the model's own score space
    and at the gallery's real size, with no assumed cosine threshold.
    """
    if own_labels.size == 0:
        return np.empty(0, dtype=np.float32)
    result = search(probes, 2)
    other = np.where(result.record_ids[:, 0] == own_labels, 1, 0)
    scores = result.scores[np.arange(own_labels.size), other]
    return scores[np.isfinite(scores)]


def _max_samples_per_record(labels: np.ndarray, among: np.ndarray | None = None) -> int:
    """The largest number of samples any record has (optionally: any record of ``among``)."""
    if among is not None:
        labels = labels[np.isin(labels, among)]
    if labels.size == 0:
        return 1
    return int(np.unique(labels, return_counts=True)[1].max())
