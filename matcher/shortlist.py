"""The compressed index that proposes a shortlist for exact re-ranking in large galleries.

Measured on near-orthogonal 512-d face templates while the matcher was designed; these
comparisons with other indexes are recorded only here (the README's "How it is built" states the
choice, and benchmarks/matcher_bench.py measures the chosen index against exact search). Cluster
and graph indexes (IVF, HNSW) lose mates, because a probe's mate is far from every cluster centroid and
graph walk; an exhaustive scan of 4-bit product-quantised codes (FAISS ``IndexPQFastScan``)
keeps the mates in its shortlist, since a mate's score stands far above the impostors'. On the
synthetic ArcFace-like set (mated cosines down to 0.2), at 1M templates and a 1000-long
shortlist: 32 sub-quantisers (16 B a template) lost 3.3% of mates, 64 (32 B) 0.2%; additive
quantisers of 16 B did little better (residual 2.3%, product-residual 2.6%) and took minutes to
encode; binary sign codes were slower (7.9 ms for 512 bits).

The scan is memory-bound: one thread reads 500k codes (16 MB) in 1.8 ms, two threads 1M codes in
about 2.2 ms, close to the machine's read bandwidth. So the codes are kept in consecutive partitions, one
per core, and a single probe scans them on parallel threads, each re-scoring its own share of
the shortlist from the float32 store before the threads join (at 1M: 2.5 ms in all, against 3.1
when the shares were merged first and re-scored on one thread). More, smaller partitions taken
from a common queue did not shorten the tail (p99 3.6 ms for 2, 4 and 8 partitions). FAISS's
64-code blocks scan no faster than the default 32 once memory-bound, and ``remove_ids`` scrambles
the order of the remaining codes with them (faiss-cpu 1.15.1), so 32 it stays. Every score the
gallery returns is exact.
"""

from __future__ import annotations

from collections.abc import Callable
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

Rescorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(probes, rows) -> (labels, scores): exact scores of the proposed rows (-1: none)."""


def pq_subquantizers(dimension: int) -> int:
    """Number of 4-bit sub-quantisers, dividing ``dimension``: one per 8 dimensions (64 for
    512-d), and at least 32. Real 128-d face embeddings (dlib's model over LFW, padded to 1M with
    distractors of their own mean and covariance) kept their exact rank-1 record in 94% of
    searches with 16 sub-quantisers and 99.8% with 32 (benchmarks/real_eval.py --pq-size)."""
    target = min(dimension, max(32, dimension // 8))
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
        ``partitions`` parts (default: one per core this process may use).

        Cosine templates are unit vectors, so the Euclidean distance orders them as the inner
        product does; the codes are scanned by distance. Fast-scan quantises each sub-quantiser's
        lookup table to 8 bits over its range, and real embeddings share a large common component
        (dlib's: cosines of 0.8-0.9 between strangers), which fills an inner-product table's range
        and leaves little of it to tell faces apart; distances are free of it. On dlib's
        embeddings padded to 200k, the inner-product scan kept the exact rank-1 record in 40% of
        searches, the distance scan in 94% (16 sub-quantisers); on synthetic 512-d templates both
        kept 99.9%."""
        metric = faiss.METRIC_INNER_PRODUCT if template_format.metric is Metric.INNER_PRODUCT else faiss.METRIC_L2
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

    def add(self, vectors: np.ndarray, all_vectors: Callable[[], np.ndarray]) -> None:
        """Append codes of ``vectors`` (the store's new last rows; ``all_vectors`` gives the
        whole store, for a rebalance: a copy when the store is in two segments, so only then)."""
        self.parts[-1].add(vectors)
        self._rebalance(all_vectors)

    def remove_rows(self, rows: np.ndarray, all_vectors: Callable[[], np.ndarray]) -> None:
        """Remove ``rows`` (the store has removed them too and ``all_vectors`` gives it); FAISS
        compacts in order, so every other code keeps its row's position."""
        offsets = self._offsets()
        for part, start, end in zip(self.parts, offsets[:-1], offsets[1:], strict=True):
            local = rows[(rows >= start) & (rows < end)] - start
            if local.size:
                part.remove_ids(faiss.IDSelectorBatch(local.astype(np.int64)))
        self._rebalance(all_vectors)

    def _rebalance(self, all_vectors: Callable[[], np.ndarray]) -> None:
        sizes = np.array([part.ntotal for part in self.parts])
        if len(self.parts) > 1 and sizes.sum() >= REBALANCE_MIN and sizes.max() > REBALANCE_RATIO * sizes.mean():
            self.parts = self._encode(self.parts[0], all_vectors(), len(self.parts)).parts

    def search(self, probes: np.ndarray, length: int, rescore: Rescorer) -> tuple[np.ndarray, np.ndarray]:
        """About ``length`` of the most promising templates per probe, as ``rescore`` scores
        them: (labels, scores) of shape (probes, proposed).

        Each partition proposes its share of ``length``, in proportion to its size, and has it
        re-scored on the same thread: partitions hold consecutive rows in insertion order, so a
        probe's best templates fall into them as into random halves, and a mate inside the one
        index's shortlist is in its partition's share but for a few at the very end of it.
        Fewer probes than a batch scan the partitions in parallel threads, which is what splits
        one probe's work over the cores; a batch uses OpenMP inside each partition.
        """
        sizes = np.array([part.ntotal for part in self.parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        total = int(offsets[-1])

        def propose(index: int) -> tuple[np.ndarray, np.ndarray]:
            share = min(int(sizes[index]), -(-length * int(sizes[index]) // total))
            _, rows = self.parts[index].search(probes, share)
            return rescore(probes, np.where(rows >= 0, rows + offsets[index], -1))

        tasks = [partial(propose, int(i)) for i in np.flatnonzero(sizes)]
        answers = run_in_parallel(tasks) if probes.shape[0] < BLAS_PROBES else [task() for task in tasks]
        if len(answers) == 1:
            return answers[0]
        return np.concatenate([a[0] for a in answers], axis=1), np.concatenate([a[1] for a in answers], axis=1)

    def serialize(self) -> list[np.ndarray]:
        return [faiss.serialize_index(part) for part in self.parts]

    @classmethod
    def deserialize(cls, parts: list[np.ndarray]) -> ShortlistIndex:
        return cls([faiss.deserialize_index(part) for part in parts])
