"""The compressed index that proposes a shortlist for exact re-ranking in large galleries.

Measured on near-orthogonal 512-d face templates (DESIGN.md, benchmarks/): cluster and graph
indexes (IVF, HNSW) lose mates, because a probe's mate is far from every cluster centroid and
graph walk; an exhaustive scan of 4-bit product-quantised codes (FAISS ``IndexPQFastScan``)
keeps the mates in its shortlist, since a mate's score stands far above the impostors'. On the
synthetic ArcFace-like set (mated cosines down to 0.2), at 1M templates and a 1000-long
shortlist: 32 sub-quantisers (16 B a template) lost 4% of mates, 64 (32 B) 0.2%; binary sign
codes were slower (7.9 ms for 512 bits). A single probe scans one core's worth of codes at a
time, so the codes are kept in consecutive partitions, one per core, scanned by parallel threads:
at 1M, one probe's scan went from 4.5 ms to 2.4 ms on two vCPUs. FAISS's 64-code blocks scan 8% faster
than the default 32, but ``remove_ids`` scrambles the order of the remaining codes with them
(faiss-cpu 1.15.1), so 32 it stays. The shortlist is re-scored exactly from the float32 store, so every
score the gallery returns is exact.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat
from matcher.tuning import BLAS_PROBES, run_in_parallel, thread_budget

TRAINING_SEED = 1234
BLOCK_SIZE = 32
REBALANCE_RATIO = 1.5
"""Partitions are re-encoded when the largest holds this many times the mean: appends all go to
the last one, and the slowest partition sets a probe's latency."""
REBALANCE_MIN = 4096
"""Below this many codes, balance does not matter (and re-encoding at every write would)."""


def pq_subquantizers(dimension: int) -> int:
    """Number of 4-bit sub-quantisers: one per 8 dimensions (64 for 512-d), dividing ``dimension``."""
    target = max(1, dimension // 8)
    for m in range(target, 0, -1):
        if dimension % m == 0:
            return m
    return 1


class ShortlistIndex:
    """PQ fast-scan codes of every stored row: row ``i`` of the store is code ``i`` of the
    partitions taken in order."""

    def __init__(self, parts: list[faiss.Index]) -> None:
        self.parts = parts

    @classmethod
    def build(
        cls, template_format: TemplateFormat, vectors: np.ndarray, training_sample: int, partitions: int | None = None
    ) -> ShortlistIndex:
        """Train on a reproducible sample of ``vectors``, then encode all of them into
        ``partitions`` parts (default: one per core this process may use; two per core measured
        slower at 1M, 3.0 against 2.6 ms, the merge of longer lists outweighing the balance)."""
        metric = faiss.METRIC_L2 if template_format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
        trained = faiss.IndexPQFastScan(
            template_format.dimension, pq_subquantizers(template_format.dimension), 4, metric, BLOCK_SIZE
        )
        n = vectors.shape[0]
        sample = np.sort(np.random.default_rng(TRAINING_SEED).choice(n, size=min(n, training_sample), replace=False))
        trained.train(np.ascontiguousarray(vectors[sample]))
        return cls._encode(trained, vectors, partitions or thread_budget())

    @classmethod
    def _encode(cls, trained: faiss.Index, vectors: np.ndarray, partitions: int) -> ShortlistIndex:
        bounds = np.linspace(0, vectors.shape[0], partitions + 1).round().astype(int)
        parts = []
        for start, end in pairwise(bounds):
            part = faiss.clone_index(trained)
            part.reset()
            if end > start:
                part.add(vectors[start:end])
            parts.append(part)
        return cls(parts)

    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([part.ntotal for part in self.parts])]).astype(np.int64)

    def add(self, vectors: np.ndarray, all_vectors: np.ndarray) -> None:
        """Append codes of ``vectors`` (the store's new last rows; ``all_vectors`` is the whole
        store, for a rebalance)."""
        self.parts[-1].add(vectors)
        self._rebalance(all_vectors)

    def remove_rows(self, rows: np.ndarray, all_vectors: np.ndarray) -> None:
        """Remove ``rows`` (the store has removed them too and is ``all_vectors`` now); FAISS
        compacts in order, so every other code keeps its row's position."""
        offsets = self._offsets()
        for part, start, end in zip(self.parts, offsets[:-1], offsets[1:], strict=True):
            local = rows[(rows >= start) & (rows < end)] - start
            if local.size:
                part.remove_ids(faiss.IDSelectorBatch(local.astype(np.int64)))
        self._rebalance(all_vectors)

    def _rebalance(self, all_vectors: np.ndarray) -> None:
        sizes = np.array([part.ntotal for part in self.parts])
        if len(self.parts) > 1 and sizes.sum() >= REBALANCE_MIN and sizes.max() > REBALANCE_RATIO * sizes.mean():
            self.parts = self._encode(self.parts[0], all_vectors, len(self.parts)).parts

    def search(self, probes: np.ndarray, length: int) -> np.ndarray:
        """Rows of the ``length`` most promising templates per probe (-1 padded). Fewer probes
        than a batch scan the partitions in parallel threads; a batch uses OpenMP inside each."""
        offsets = self._offsets()
        length = min(length, int(offsets[-1]))

        def scan(index: int) -> tuple[np.ndarray, np.ndarray]:
            part = self.parts[index]
            distances, rows = part.search(probes, min(length, int(part.ntotal)))
            return distances, np.where(rows >= 0, rows + offsets[index], -1)

        filled = [i for i, part in enumerate(self.parts) if part.ntotal > 0]
        if probes.shape[0] < BLAS_PROBES:
            answers = run_in_parallel([partial(scan, i) for i in filled])
        else:  # a batch: OpenMP inside each partition
            answers = [scan(i) for i in filled]
        if len(answers) == 1:
            return answers[0][1]
        distances = np.concatenate([d for d, _ in answers], axis=1)
        rows = np.concatenate([r for _, r in answers], axis=1)
        better = -distances if self.parts[0].metric_type == faiss.METRIC_INNER_PRODUCT else distances
        better = np.where(rows >= 0, better, np.inf)
        best = np.argpartition(better, length - 1, axis=1)[:, :length]
        return np.take_along_axis(rows, best, axis=1)

    def serialize(self) -> list[np.ndarray]:
        return [faiss.serialize_index(part) for part in self.parts]

    @classmethod
    def deserialize(cls, parts: list[np.ndarray]) -> ShortlistIndex:
        return cls([faiss.deserialize_index(part) for part in parts])
