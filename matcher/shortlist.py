"""The compressed index that proposes a shortlist for exact re-ranking in large galleries.

Measured on near-orthogonal 512-d face templates (see DESIGN.md and benchmarks/): cluster and
graph indexes (IVF, HNSW) lose mates, because a probe's mate is far from every cluster centroid
and graph walk; an exhaustive scan of 4-bit product-quantised codes (FAISS ``IndexPQFastScan``)
keeps the mates in its shortlist, since a mate's score stands far above the impostors', and scans
32 bytes per template instead of 2 KiB. On the synthetic ArcFace-like set (mated cosines down to
0.2), 32 sub-quantisers (16 B) with a 1000-long shortlist lost 0.4% of mates at 100k, 64 (32 B)
lost none that exact search finds at rank 1, for 0.36 ms per probe: see benchmarks/. The shortlist is then re-scored exactly from the
float32 store, so every score the gallery returns is exact.
"""

from __future__ import annotations

import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat

TRAINING_SEED = 1234


def pq_subquantizers(dimension: int) -> int:
    """Number of 4-bit sub-quantisers: one per 8 dimensions (64 for 512-d), dividing ``dimension``."""
    target = max(1, dimension // 8)
    for m in range(target, 0, -1):
        if dimension % m == 0:
            return m
    return 1


def build_shortlist_index(
    template_format: TemplateFormat, vectors: np.ndarray, training_sample: int
) -> faiss.Index:
    """Train a PQ fast-scan index on a reproducible sample of ``vectors`` and add all of them."""
    metric = faiss.METRIC_L2 if template_format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexPQFastScan(
        template_format.dimension, pq_subquantizers(template_format.dimension), 4, metric
    )
    rng = np.random.default_rng(TRAINING_SEED)
    n = vectors.shape[0]
    sample = np.sort(rng.choice(n, size=min(n, training_sample), replace=False))
    index.train(np.ascontiguousarray(vectors[sample]))
    index.add(vectors)
    return index


def search_shortlist(index: faiss.Index, probes: np.ndarray, length: int) -> np.ndarray:
    """Row positions of the ``length`` most promising templates per probe (-1 padded)."""
    _, rows = index.search(probes, min(length, int(index.ntotal)))
    return rows
