"""The compressed index that proposes a shortlist for exact re-ranking in large galleries.

Measured on near-orthogonal 512-d face templates (DESIGN.md, benchmarks/): cluster and graph
indexes (IVF, HNSW) lose mates, because a probe's mate is far from every cluster centroid and
graph walk; an exhaustive scan of 4-bit product-quantised codes (FAISS ``IndexPQFastScan``)
keeps the mates in its shortlist, since a mate's score stands far above the impostors'. On the
synthetic ArcFace-like set (mated cosines down to 0.2) 32 sub-quantisers (16 B a template) lost
4% of mates at 1M with a 1000-long shortlist, 64 (32 B) lost 0.2%: 64 it is. The shortlist is
re-scored exactly from the float32 store, so every score the gallery returns is exact.

A single query's fast-scan runs on one core (FAISS parallelises over queries only), so the codes
are split into row-range shards searched in parallel: on 2 cores a 1M single-probe scan falls
from 4.4 ms to about half. Rows keep their global positions: shard ``i`` holds rows
``offsets[i]`` to ``offsets[i + 1]``, appends go to the last shard, and a new shard is opened
when the last one has grown well past the others.
"""

from __future__ import annotations


import faiss
import numpy as np

from matcher.formats import Metric, TemplateFormat
from matcher.tuning import SHARD_POOL, search_parallelism, use_threads_for

TRAINING_SEED = 1234
MIN_SHARD_ROWS = 50_000


def pq_subquantizers(dimension: int) -> int:
    """Number of 4-bit sub-quantisers: one per 8 dimensions (64 for 512-d), dividing ``dimension``."""
    target = max(1, dimension // 8)
    for m in range(target, 0, -1):
        if dimension % m == 0:
            return m
    return 1


class ShortlistIndex:
    """PQ fast-scan codes of every stored row, in row-range shards."""

    def __init__(self, shards: list[faiss.Index], min_shard_rows: int = MIN_SHARD_ROWS) -> None:
        self.shards = shards
        self.min_shard_rows = min_shard_rows

    @classmethod
    def build(
        cls,
        template_format: TemplateFormat,
        vectors: np.ndarray,
        training_sample: int,
        min_shard_rows: int = MIN_SHARD_ROWS,
    ) -> ShortlistIndex:
        """Train on a reproducible sample of ``vectors``, then encode all of them."""
        metric = faiss.METRIC_L2 if template_format.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
        trained = faiss.IndexPQFastScan(
            template_format.dimension, pq_subquantizers(template_format.dimension), 4, metric
        )
        n = vectors.shape[0]
        sample = np.sort(np.random.default_rng(TRAINING_SEED).choice(n, size=min(n, training_sample), replace=False))
        trained.train(np.ascontiguousarray(vectors[sample]))
        count = max(1, min(search_parallelism(), n // min_shard_rows))
        bounds = np.linspace(0, n, count + 1).astype(int)
        shards = []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            shard = faiss.clone_index(trained)
            shard.add(np.ascontiguousarray(vectors[start:stop]))
            shards.append(shard)
        return cls(shards, min_shard_rows)

    @property
    def size(self) -> int:
        return sum(int(shard.ntotal) for shard in self.shards)

    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([int(shard.ntotal) for shard in self.shards])])

    def add(self, vectors: np.ndarray) -> None:
        last = self.shards[-1]
        if self._last_is_full():
            fresh = faiss.clone_index(last)
            fresh.reset()
            self.shards.append(fresh)
            last = fresh
        last.add(vectors)

    def _last_is_full(self) -> bool:
        """Open a new shard when the last one is big and either more cores are idle or it has
        grown well past the average, so that shards stay balanced as a gallery grows."""
        rows, count = int(self.shards[-1].ntotal), len(self.shards)
        if rows < self.min_shard_rows:
            return False
        if count < search_parallelism():
            return rows >= 2 * self.min_shard_rows
        return rows > 1.5 * self.size / count

    def remove_rows(self, rows: np.ndarray) -> None:
        """Remove global ``rows`` (sorted), shard by shard, keeping every other row's position."""
        offsets = self._offsets()
        owner = np.searchsorted(offsets, rows, side="right") - 1
        for index in np.unique(owner):
            local = rows[owner == index] - offsets[index]
            self.shards[index].remove_ids(faiss.IDSelectorBatch(local.astype(np.int64)))
        self.shards = [shard for shard in self.shards if shard.ntotal > 0] or self.shards[:1]

    def search(self, probes: np.ndarray, length: int) -> np.ndarray:
        """Global rows of the ``length`` most promising templates of every shard (-1 padded)."""
        offsets = self._offsets()

        def one(index: int) -> np.ndarray:
            use_threads_for(probes.shape[0] if len(self.shards) == 1 else 1)
            shard = self.shards[index]
            _, local = shard.search(probes, min(length, int(shard.ntotal)))
            return np.where(local >= 0, local + offsets[index], -1)

        if len(self.shards) == 1:
            return one(0)
        return np.hstack(list(SHARD_POOL.map(one, range(len(self.shards)))))

    def serialize(self) -> list[np.ndarray]:
        return [faiss.serialize_index(shard) for shard in self.shards]

    @classmethod
    def deserialize(cls, parts: list[np.ndarray], min_shard_rows: int = MIN_SHARD_ROWS) -> ShortlistIndex:
        return cls([faiss.deserialize_index(part) for part in parts], min_shard_rows)


__all__ = ["ShortlistIndex", "pq_subquantizers"]
