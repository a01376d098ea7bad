"""The compressed index that proposes a shortlist for exact re-ranking in large galleries.

Measured on near-orthogonal 512-d face templates (DESIGN.md, benchmarks/): cluster and graph
indexes (IVF, HNSW) lose mates, because a probe's mate is far from every cluster centroid and
graph walk; an exhaustive scan of 4-bit product-quantised codes (FAISS ``IndexPQFastScan``)
keeps the mates in its shortlist, since a mate's score stands far above the impostors'. On the
synthetic ArcFace-like set (mated cosines down to 0.2), at 1M templates and a 1000-long
shortlist: 32 sub-quantisers (16 B a template) lost 4% of mates, 64 (32 B) 0.2%; binary sign
codes were slower (7.9 ms for 512 bits); splitting the codes into shards scanned by two threads
was slower too (the two vCPUs share one core's compute). FAISS's 64-code blocks scan 8% faster
than the default 32, but ``remove_ids`` scrambles the order of the remaining codes with them
(faiss-cpu 1.15.1), so 32 it stays. The shortlist is re-scored exactly from the float32 store, so every
score the gallery returns is exact.
"""

from __future__ import annotations

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat

TRAINING_SEED = 1234
BLOCK_SIZE = 32


def pq_subquantizers(dimension: int) -> int:
    """Number of 4-bit sub-quantisers: one per 8 dimensions (64 for 512-d), dividing ``dimension``."""
    target = max(1, dimension // 8)
    for m in range(target, 0, -1):
        if dimension % m == 0:
            return m
    return 1


class ShortlistIndex:
    """PQ fast-scan codes of every stored row, row ``i`` of the store being code ``i``."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    @classmethod
    def build(cls, template_format: TemplateFormat, vectors: np.ndarray, training_sample: int) -> ShortlistIndex:
        """Train on a reproducible sample of ``vectors``, then encode all of them."""
        metric = faiss.METRIC_L2 if template_format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexPQFastScan(
            template_format.dimension, pq_subquantizers(template_format.dimension), 4, metric, BLOCK_SIZE
        )
        n = vectors.shape[0]
        sample = np.sort(np.random.default_rng(TRAINING_SEED).choice(n, size=min(n, training_sample), replace=False))
        index.train(np.ascontiguousarray(vectors[sample]))
        index.add(vectors)
        return cls(index)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(vectors)

    def remove_rows(self, rows: np.ndarray) -> None:
        """Remove ``rows``; FAISS compacts in order, so every other code keeps its row's position."""
        self.index.remove_ids(faiss.IDSelectorBatch(rows.astype(np.int64)))

    def search(self, probes: np.ndarray, length: int) -> np.ndarray:
        """Rows of the ``length`` most promising templates per probe (-1 padded)."""
        _, rows = self.index.search(probes, min(length, int(self.index.ntotal)))
        return rows

    def serialize(self) -> np.ndarray:
        return faiss.serialize_index(self.index)

    @classmethod
    def deserialize(cls, data: np.ndarray) -> ShortlistIndex:
        return cls(faiss.deserialize_index(data))
