"""The exact float32 template store and its record labels.

Templates are float32 rows in insertion order; row ``i`` belongs to record ``labels[i]``. The
rows are searched exhaustively by FAISS's own kernels while the gallery is small (exact search),
and give exact scores to a shortlist once it is large. Removing rows compacts them in order, so a
positional companion index (the compressed shortlist) stays aligned when the same rows are
removed from it.

The rows are numpy arrays rather than a FAISS flat index because they must be able to live in a
memory-mapped snapshot: on our VMs first-touching fresh anonymous memory runs at about 0.8 GB/s,
while mapping a snapshot that sits in the page cache costs almost nothing, so a loaded gallery
searches straight from the mapped file (private, copy-on-write), or from the node's one
decrypted copy of a sealed snapshot (:mod:`matcher.plain_copies`). So the store has two
segments: the loaded **base**, mapped and never grown, and the **tail** of rows added since, in
this process's own memory. Appends never copy the base: the processes serving one snapshot share
its pages however many records each enrols afterwards. A removal compacts each segment in place
(in the base, the pages it moves become the process's own, copy-on-write).
"""

from __future__ import annotations

import ctypes
import itertools

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat

_GROWTH = 1.5


class TemplateStore:
    """Templates as float32 rows plus the record id of each row: row ``i`` is the base's row
    ``i`` below the base's size, the tail's row ``i - base size`` from there. Not thread-safe:
    the gallery index serialises writers against readers."""

    def __init__(self, template_format: TemplateFormat) -> None:
        self.format = template_format
        self._base = np.empty((0, template_format.dimension), dtype=np.float32)
        self._base_size = 0
        self._tail = np.empty((0, template_format.dimension), dtype=np.float32)
        self._tail_size = 0
        self.labels = np.empty(0, dtype=np.int64)

    @property
    def size(self) -> int:
        return self._base_size + self._tail_size

    @property
    def faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT

    def segments(self) -> list[tuple[int, np.ndarray]]:
        """(first row, zero-copy (n, d) view) of the base and the tail, the empty ones left out;
        valid until the next write."""
        pairs = ((0, self._base[: self._base_size]), (self._base_size, self._tail[: self._tail_size]))
        return [(first, rows) for first, rows in pairs if rows.shape[0]]

    def vectors(self) -> np.ndarray:
        """Every row as one (n, d) array: a view when the rows are in one segment, else a copy,
        so only for the rare whole-gallery passes (training, re-encoding)."""
        segments = [rows for _, rows in self.segments()]
        if len(segments) <= 1:
            return segments[0] if segments else self._tail[:0]
        return np.concatenate(segments)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, gathered into a new (len(rows), d) array."""
        out = np.empty((rows.size, self.format.dimension), dtype=np.float32)
        in_base = rows < self._base_size
        out[in_base] = self._base[rows[in_base]]
        out[~in_base] = self._tail[rows[~in_base] - self._base_size]
        return out

    def attach(self, labels: np.ndarray, templates: np.ndarray) -> None:
        """Adopt ``templates`` (e.g. a copy-on-write memory map) as the base, without copying."""
        self._base, self._base_size, self.labels = templates, templates.shape[0], labels
        self._tail, self._tail_size = self._tail[:0], 0

    def add(self, labels: np.ndarray, templates: np.ndarray) -> None:
        """Append to the tail, which grows by half again when full; the base is never copied."""
        needed = self._tail_size + templates.shape[0]
        if needed > self._tail.shape[0]:
            grown = np.empty((max(needed, int(self._tail.shape[0] * _GROWTH)), self.format.dimension), np.float32)
            grown[: self._tail_size] = self._tail[: self._tail_size]
            self._tail = grown
        self._tail[self._tail_size : needed] = templates
        self._tail_size = needed
        self.labels = np.concatenate([self.labels, labels])

    def rows_of(self, record_ids: np.ndarray) -> np.ndarray:
        """Row positions of every template of the given records."""
        return np.flatnonzero(np.isin(self.labels, record_ids))

    def remove_rows(self, rows: np.ndarray) -> None:
        """Drop ``rows`` (sorted, unique), compacting each segment in place, in order."""
        if rows.size == 0:
            return
        base_size = self._base_size
        in_base = rows[rows < base_size]
        if in_base.size:
            if not self._base.flags.writeable:  # a read-only map: this process's own copy
                self._base = np.array(self._base[:base_size])
            self._base_size = _compact(self._base, base_size, in_base)
        self._tail_size = _compact(self._tail, self._tail_size, rows[rows >= base_size] - base_size)
        keep = np.ones(self.labels.size, dtype=bool)
        keep[rows] = False
        self.labels = self.labels[keep]

    def search(self, probes: np.ndarray, hits: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``hits`` rows per probe as (labels, scores), scores higher-is-better (each
        segment's top rows side by side: the caller ranks them).

        The scan's scores depend in their last bit on the kernel that computed them (FAISS's
        scan does four rows at a time, GEMM blocks differently), hence on a row's position in
        the store. The hits are scored again pair by pair, so that a probe and a template get
        the same score whatever the path, the index kind or the shard: verification,
        identification and every backend agree to the bit.
        """
        found = []
        for first, vectors in self.segments():
            _, rows = faiss.knn(probes, vectors, min(hits, vectors.shape[0]), metric=self.faiss_metric)
            found.append(np.where(rows >= 0, rows + first, -1))
        return self.rescore(probes, np.concatenate(found, axis=1))

    def rescore(self, probes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of probe ``i`` against rows ``rows[i]`` (-1 = no row), as (labels, scores).

        FAISS computes them in place from the row ids, without gathering rows into a copy: one
        call per segment, each given only its own rows (FAISS skips the others, marked -1)."""
        missing = rows < 0
        distances = np.empty(rows.shape, dtype=np.float32)
        by_idx = faiss.fvec_L2sqr_by_idx if self.format.metric is Metric.L2 else faiss.fvec_inner_products_by_idx  # type: ignore[attr-defined]
        segments = self.segments()
        for first, vectors in segments:
            inside = ~missing & (rows >= first) & (rows < first + vectors.shape[0])
            local = np.ascontiguousarray(np.where(inside, rows - first, -1), dtype=np.int64)
            found = distances if len(segments) == 1 else np.empty_like(distances)
            by_idx(
                faiss.swig_ptr(found),
                faiss.swig_ptr(probes),
                faiss.swig_ptr(vectors),
                faiss.swig_ptr(local),
                self.format.dimension,
                rows.shape[0],
                rows.shape[1],
            )
            if found is not distances:
                np.copyto(distances, found, where=inside)
        scores = self._as_similarity(distances)
        scores[missing] = -np.inf
        labels = self.labels[np.where(missing, 0, rows)]
        labels[missing] = -1
        return labels, scores

    def _as_similarity(self, distances: np.ndarray) -> np.ndarray:
        if self.format.metric is Metric.L2:
            distances = -distances
        return np.where(np.isfinite(distances), distances, -np.inf).astype(np.float32, copy=False)


def _compact(buffer: np.ndarray, size: int, rows: np.ndarray) -> int:
    """Drop ``rows`` (sorted, unique, below ``size``) from ``buffer``'s first ``size`` rows,
    moving each run of kept rows down in place; returns the new size."""
    if rows.size == 0:
        return size
    row_bytes = buffer.shape[1] * buffer.itemsize
    base = buffer.ctypes.data
    boundaries = np.append(rows, size)
    for shift, (gone, next_gone) in enumerate(itertools.pairwise(boundaries), 1):
        run = int(next_gone - gone - 1)
        if run > 0:
            ctypes.memmove(
                base + (int(gone) + 1 - shift) * row_bytes, base + (int(gone) + 1) * row_bytes, run * row_bytes
            )
    return size - int(rows.size)
