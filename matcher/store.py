"""The exact float32 template store and its record labels.

One FAISS flat index holds every template of a gallery in insertion order; row ``i`` belongs to
record ``labels[i]``. It is searched directly while the gallery is small (exact search), and it
is the source of exact scores for re-ranking a shortlist once the gallery is large. Removing rows
compacts the index in order, so any positional companion index (the compressed shortlist index)
stays aligned when the same rows are removed from it.
"""

from __future__ import annotations

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat


class TemplateStore:
    """Templates as float32 rows plus the record id of each row. Not thread-safe: the gallery
    index serialises writers against readers."""

    def __init__(self, template_format: TemplateFormat) -> None:
        self.format = template_format
        d = template_format.dimension
        self.flat: faiss.IndexFlat = (
            faiss.IndexFlatL2(d) if template_format.metric is Metric.L2 else faiss.IndexFlatIP(d)
        )
        self.labels = np.empty(0, dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.flat.ntotal)

    def vectors(self) -> np.ndarray:
        """A zero-copy (n, d) view of the stored templates; valid until the next write."""
        n, d = self.size, self.format.dimension
        if n == 0:
            return np.empty((0, d), dtype=np.float32)
        return faiss.rev_swig_ptr(self.flat.get_xb(), n * d).reshape(n, d)

    def allocate(self, labels: np.ndarray) -> np.ndarray:
        """Make room for ``len(labels)`` rows and return a writable view to fill (snapshot load)."""
        n, d = labels.shape[0], self.format.dimension
        self.flat.reset()
        self.flat.codes.resize(n * d * 4)
        self.flat.ntotal = n
        self.labels = labels
        return self.vectors()

    def add(self, labels: np.ndarray, templates: np.ndarray) -> None:
        self.flat.add(templates)
        self.labels = np.concatenate([self.labels, labels])

    def rows_of(self, record_ids: np.ndarray) -> np.ndarray:
        """Row positions of every template of the given records."""
        return np.flatnonzero(np.isin(self.labels, record_ids))

    def remove_rows(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        self.flat.remove_ids(faiss.IDSelectorBatch(rows.astype(np.int64)))
        keep = np.ones(self.labels.size, dtype=bool)
        keep[rows] = False
        self.labels = self.labels[keep]

    def search(self, probes: np.ndarray, hits: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``hits`` rows per probe as (labels, scores), scores higher-is-better."""
        hits = min(hits, self.size)
        distances, rows = self.flat.search(probes, hits)
        return self._labels_at(rows), self._as_similarity(distances)

    def rescore(self, probes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of probe ``i`` against rows ``rows[i]`` (-1 = no row), as (labels, scores).

        FAISS computes the subset distances in place, without gathering the rows into a copy."""
        missing = rows < 0
        rows = np.ascontiguousarray(np.where(missing, 0, rows), dtype=np.int64)
        distances = np.empty(rows.shape, dtype=np.float32)
        self.flat.compute_distance_subset(
            rows.shape[0], faiss.swig_ptr(probes), rows.shape[1], faiss.swig_ptr(distances), faiss.swig_ptr(rows)
        )
        scores = self._as_similarity(distances)
        scores[missing] = -np.inf
        labels = self.labels[rows]
        labels[missing] = -1
        return labels, scores

    def _labels_at(self, rows: np.ndarray) -> np.ndarray:
        labels = self.labels[np.where(rows >= 0, rows, 0)] if self.labels.size else rows.copy()
        labels[rows < 0] = -1
        return labels

    def _as_similarity(self, distances: np.ndarray) -> np.ndarray:
        if self.format.metric is Metric.L2:
            return -distances
        return distances
