"""The exact float32 template store and its record labels.

Templates are rows of one C-contiguous float32 buffer in insertion order; row ``i`` belongs to
record ``labels[i]``. The buffer is searched exhaustively by FAISS's own kernels while the
gallery is small (exact search), and gives exact scores to a shortlist once it is large.
Removing rows compacts the buffer in order, so a positional companion index (the compressed
shortlist) stays aligned when the same rows are removed from it.

The buffer is a numpy array rather than a FAISS flat index because it must be able to live in a
memory-mapped snapshot: on our VMs first-touching fresh anonymous memory runs at about 0.8 GB/s,
while mapping a snapshot that sits in the page cache costs almost nothing, so a loaded gallery
searches straight from the mapped file (private, copy-on-write) and only becomes an ordinary
in-memory buffer when a write needs more room.
"""

from __future__ import annotations

import ctypes
import itertools

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat

_GROWTH = 1.5


class TemplateStore:
    """Templates as float32 rows plus the record id of each row. Not thread-safe: the gallery
    index serialises writers against readers."""

    def __init__(self, template_format: TemplateFormat) -> None:
        self.format = template_format
        self._buffer = np.empty((0, template_format.dimension), dtype=np.float32)
        self._size = 0
        self.labels = np.empty(0, dtype=np.int64)

    @property
    def size(self) -> int:
        return self._size

    @property
    def faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT

    def vectors(self) -> np.ndarray:
        """A zero-copy (n, d) view of the stored templates; valid until the next write."""
        return self._buffer[: self._size]

    def attach(self, labels: np.ndarray, templates: np.ndarray) -> None:
        """Adopt ``templates`` (e.g. a copy-on-write memory map) as the buffer, without copying."""
        self._buffer, self._size, self.labels = templates, templates.shape[0], labels

    def add(self, labels: np.ndarray, templates: np.ndarray) -> None:
        needed = self._size + templates.shape[0]
        if needed > self._buffer.shape[0] or not self._buffer.flags.writeable:
            grown = np.empty((max(needed, int(self._buffer.shape[0] * _GROWTH)), self.format.dimension), np.float32)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = templates
        self._size = needed
        self.labels = np.concatenate([self.labels, labels])

    def rows_of(self, record_ids: np.ndarray) -> np.ndarray:
        """Row positions of every template of the given records."""
        return np.flatnonzero(np.isin(self.labels, record_ids))

    def remove_rows(self, rows: np.ndarray) -> None:
        """Drop ``rows`` (sorted, unique), moving each run of kept rows down in place."""
        if rows.size == 0:
            return
        row_bytes = self.format.dimension * 4
        base = self._buffer.ctypes.data
        boundaries = np.append(rows, self._size)
        for shift, (gone, next_gone) in enumerate(itertools.pairwise(boundaries), 1):
            run = int(next_gone - gone - 1)
            if run > 0:
                ctypes.memmove(
                    base + (int(gone) + 1 - shift) * row_bytes, base + (int(gone) + 1) * row_bytes, run * row_bytes
                )
        self._size -= rows.size
        keep = np.ones(self.labels.size, dtype=bool)
        keep[rows] = False
        self.labels = self.labels[keep]

    def search(self, probes: np.ndarray, hits: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``hits`` rows per probe as (labels, scores), scores higher-is-better.

        The scan's scores depend in their last bit on the kernel that computed them (FAISS's
        scan does four rows at a time, GEMM blocks differently), hence on a row's position in
        the store. The hits are scored again pair by pair, so that a probe and a template get
        the same score whatever the path, the index kind or the shard: verification,
        identification and every backend agree to the bit.
        """
        hits = min(hits, self._size)
        _, rows = faiss.knn(probes, self.vectors(), hits, metric=self.faiss_metric)
        return self.rescore(probes, rows)

    def rescore(self, probes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of probe ``i`` against rows ``rows[i]`` (-1 = no row), as (labels, scores).

        FAISS computes them in place from the row ids, without gathering rows into a copy."""
        missing = rows < 0
        rows = np.ascontiguousarray(np.where(missing, 0, rows), dtype=np.int64)
        distances = np.empty(rows.shape, dtype=np.float32)
        by_idx = faiss.fvec_L2sqr_by_idx if self.format.metric is Metric.L2 else faiss.fvec_inner_products_by_idx  # type: ignore[attr-defined]
        by_idx(
            faiss.swig_ptr(distances),
            faiss.swig_ptr(probes),
            faiss.swig_ptr(self._buffer),
            faiss.swig_ptr(rows),
            self.format.dimension,
            rows.shape[0],
            rows.shape[1],
        )
        scores = self._as_similarity(distances)
        scores[missing] = -np.inf
        labels = self.labels[rows]
        labels[missing] = -1
        return labels, scores

    def _as_similarity(self, distances: np.ndarray) -> np.ndarray:
        if self.format.metric is Metric.L2:
            distances = -distances
        return np.where(np.isfinite(distances), distances, -np.inf).astype(np.float32, copy=False)
