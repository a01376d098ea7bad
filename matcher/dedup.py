"""Deduplication of a gallery: every pair of records scoring above a threshold, in blocks.

Numpy in, numpy out, as the rest of the matcher; a caller (the service's job, the command line,
a benchmark) owns the loop over blocks, so that it can checkpoint after each one and resume
from the next (:class:`BlockPlan`), store the pairs where it wants, and pause between column
chunks (:func:`scan_block`'s ``pause``) when more urgent work waits.

**Exact path.** Rows are split into blocks of about :data:`ROW_BLOCK` rows; block ``b`` is
scored against itself and every later row, in chunks of :data:`COLUMN_CHUNK` columns, one GEMM
(numpy's BLAS, on every core) per chunk: the upper triangle only, so every pair is scored once.
A chunk's scores are thresholded while still in cache: measured on the development machine
(2 vCPUs, 512-d), 1024 x 4096 chunks thresholded as they came ran about as fast as a bare
4096 x 4096 GEMM, while that product thresholded afterwards lost 30-40% to the pass over its
64 MB of scores. The working memory is one
chunk of scores (16 MB) and the pairs above threshold of one block, whatever the gallery's size.

**Approximate path** (:func:`shortlist_block`): the PQ fast-scan shortlist of the identification
path (:mod:`matcher.shortlist`) proposes, for each row of a block, :data:`SHORTLIST_LENGTH`
candidates, re-scored exactly; the pairs are the same as the exact path's but for a duplicate
outside a row's shortlist. Chosen from :data:`SHORTLIST_MIN_TEMPLATES` templates
(:func:`choose_method`); benchmarks/dedup_bench.py measures both.

**Records, not templates.** A pair is two records, scored by their best pair of samples. Blocks
end on record boundaries and each record's rows are contiguous (:func:`contiguous_order`), so
that all the comparisons of two records fall into one block, and a block's pairs are final: each
pair is reported once, by the block of its first record.

**Threshold** (:func:`calibrate`): from the far tail of the gallery's own non-mated scores
(:mod:`matcher.tail`), fitted on 2e8 scores or more of sampled records against all the others,
at the caller's FMR (``match``) and ten times it (``possible``), with the number of false pairs
to expect at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from matcher.calibration import check_rate
from matcher.errors import CalibrationError
from matcher.formats import Metric, TemplateFormat
from matcher.shortlist import ShortlistIndex
from matcher.store import TemplateStore
from matcher.tail import TailFit, TopScores, fit_tail
from matcher.tuning import configure_faiss, use_threads_for

ROW_BLOCK = 1024
"""Rows per block: the unit of progress and of checkpoints (about 1 TFLOP against 1M rows)."""
COLUMN_CHUNK = 4096
"""Columns per GEMM: 1024 x 4096 scores (16 MB) are thresholded while they are in cache."""
SAMPLE_SCORES = 200_000_000
"""Non-mated scores the tail is fitted on (at least): its top 1e-4 (20,000 excesses) lies near
rates of 1e-4 to 5e-9, two to four decades above the rates a deduplication reads."""
SAMPLE_ROWS = 2000
"""At least this many records are sampled (against all the others), so that many templates'
neighbourhoods are seen: 2e9 scores at 1M, 20 s of GEMM on 2 vCPUs against 8 min for the
shortlist scan."""
POSSIBLE_FACTOR = 10.0
SHORTLIST_LENGTH = 64
"""Candidates a row's PQ shortlist proposes for exact re-scoring: room for large clusters."""
SHORTLIST_MIN_TEMPLATES = 200_000
"""From this many templates the PQ shortlist replaces the exact scan. Measured at 100k x 512 (2
vCPUs, benchmarks/dedup_bench.py): exact 53 s, 99.8% of planted pairs; shortlist 4.8 s with its
training, 99.4%. Below 200k the exact scan takes minutes and loses nothing; above, its cost grows
as n^2 at a rate twelve times lower (1M: about 1.5 h against 8 min), as for identification
(``IndexPolicy.exact_max_templates``)."""
TRAINING_SAMPLE = 65_536

Method = Literal["exact", "pq_shortlist"]
Pause = Callable[[], None]


def choose_method(templates: int) -> Method:
    return "pq_shortlist" if templates >= SHORTLIST_MIN_TEMPLATES else "exact"


def contiguous_order(labels: np.ndarray) -> np.ndarray | None:
    """A stable permutation of the rows that makes each record's rows contiguous, or None when
    they already are (a gallery index appends a record's samples together)."""
    if labels.size == 0:
        return None
    runs = 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))
    if runs == np.unique(labels).size:
        return None
    return np.argsort(labels, kind="stable")


@dataclass(frozen=True)
class BlockPlan:
    """Where each block starts (``starts``, ending with the row count): about ``block_rows`` rows,
    extended to the end of the record its last row belongs to. The same labels always give the
    same plan, so a block index is a checkpoint."""

    starts: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, block_rows: int = ROW_BLOCK) -> BlockPlan:
        n = labels.size
        starts = [0]
        while starts[-1] < n:
            end = min(n, starts[-1] + max(1, block_rows))
            while 0 < end < n and labels[end] == labels[end - 1]:
                end += 1
            starts.append(end)
        return cls(np.asarray(starts if n else [0], dtype=np.int64))

    @property
    def blocks(self) -> int:
        return int(self.starts.size - 1)

    def rows(self, block: int) -> tuple[int, int]:
        return int(self.starts[block]), int(self.starts[block + 1])

    def work_done(self, blocks_done: int) -> float:
        """The fraction of all pair comparisons the first ``blocks_done`` blocks make (the first
        blocks are the longest: each is scored against every later row)."""
        n = int(self.starts[-1])
        if n == 0:
            return 1.0
        start = int(self.starts[min(blocks_done, self.blocks)])
        return 1.0 - (n - start) ** 2 / n**2


@dataclass(frozen=True)
class DedupThresholds:
    """Scores at the job's FMR (``match``) and at ten times it (``possible``, the lowest kept),
    and the false pairs the fitted tail expects among all the gallery's pairs at ``match``."""

    match: float
    possible: float
    target_fmr: float
    expected_false_pairs: float
    tail: TailFit


def calibrate(
    template_format: TemplateFormat,
    vectors: np.ndarray,
    labels: np.ndarray,
    target_fmr: float,
    sample_scores: int = SAMPLE_SCORES,
    seed: int = 0,
) -> DedupThresholds:
    """Thresholds from the tail fitted on about ``sample_scores`` non-mated scores of the gallery
    itself (:func:`nonmated_tail`). Duplicates are rare among them, and
    :func:`matcher.tail.fit_tail` takes out the few it meets."""
    fmr = check_rate(target_fmr)
    tail = nonmated_tail(template_format, vectors, labels, sample_scores, seed)
    comparisons = vectors.shape[0] * (vectors.shape[0] - 1) // 2
    match = tail.threshold_at(fmr)
    possible = tail.threshold_at(min(fmr * POSSIBLE_FACTOR, 0.5))
    return DedupThresholds(match, min(possible, match), fmr, fmr * comparisons, tail)


def nonmated_tail(
    template_format: TemplateFormat,
    vectors: np.ndarray,
    labels: np.ndarray,
    sample_scores: int = SAMPLE_SCORES,
    seed: int = 0,
) -> TailFit:
    """The tail fitted on scores of pairs of different records of the gallery itself, streamed
    by GEMM chunks whose highest scores only are kept (:class:`matcher.tail.TopScores`): the
    rows of ``max(SAMPLE_ROWS, sample_scores / n)`` random records against the rows of all the
    others (2e8 scores at 100k, a few seconds of GEMM, reaching rates near 5e-9), or every pair
    when there are no more than twice ``sample_scores`` (below about 28k templates). No pair is
    scored twice: the sampled records are no columns."""
    n = vectors.shape[0]
    if n * (n - 1) // 2 <= 2 * sample_scores:
        return _fit_every_pair(template_format.metric, vectors, labels)
    sample_rows = max(SAMPLE_ROWS, -(-sample_scores // n))
    chosen = np.random.default_rng(seed).choice(n, size=sample_rows, replace=False)
    sampled = np.isin(labels, labels[chosen])
    rows = vectors[sampled]
    top = TopScores()
    buffer = np.empty((rows.shape[0], COLUMN_CHUNK), dtype=np.float32)
    for first in range(0, n, COLUMN_CHUNK):
        last = min(n, first + COLUMN_CHUNK)
        scores = score_matrix(template_format.metric, rows, vectors[first:last], out=buffer[:, : last - first])
        scores[:, sampled[first:last]] = -np.inf
        top.add(scores)
    return fit_tail(top.highest(), rows.shape[0] * (n - rows.shape[0]), _centre(top))


def _fit_every_pair(metric: Metric, vectors: np.ndarray, labels: np.ndarray) -> TailFit:
    """The tail of every pair of different records: the upper triangle, row block by row block."""
    n = vectors.shape[0]
    top = TopScores()
    pairs = 0
    for start in range(0, n, ROW_BLOCK):
        end = min(n, start + ROW_BLOCK)
        for first in range(start, n, COLUMN_CHUNK):
            last = min(n, first + COLUMN_CHUNK)
            scores = score_matrix(metric, vectors[start:end], vectors[first:last])
            left_out = labels[start:end, None] == labels[None, first:last]
            left_out |= np.arange(start, end)[:, None] >= np.arange(first, last)[None, :]
            scores[left_out] = -np.inf
            top.add(scores)
            pairs += left_out.size - int(np.count_nonzero(left_out))
    return fit_tail(top.highest(), pairs, _centre(top))


def _centre(top: TopScores) -> float:
    if top.centre is None:
        raise CalibrationError("a tail fit needs non-mated scores: the gallery has a single record")
    return top.centre


def score_matrix(metric: Metric, rows: np.ndarray, columns: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Scores (higher is better) of every row against every column, by one GEMM."""
    scores = np.matmul(rows, columns.T, out=out)
    if metric is Metric.L2:  # -|a - b|^2 = 2ab - |a|^2 - |b|^2
        scores *= 2
        scores -= np.einsum("ij,ij->i", rows, rows)[:, None]
        scores -= np.einsum("ij,ij->i", columns, columns)[None, :]
    return scores


@dataclass(frozen=True)
class RecordPairs:
    """Pairs of records (``left`` before ``right`` in row order) with their best score."""

    left: np.ndarray
    right: np.ndarray
    scores: np.ndarray

    @classmethod
    def of_rows(cls, labels: np.ndarray, rows: np.ndarray, columns: np.ndarray, scores: np.ndarray) -> RecordPairs:
        """Row pairs (row < column) reduced to record pairs, each with its best score; pairs of a
        record's own samples dropped. Sorted by left, then right, for a reproducible order."""
        keep = (columns > rows) & (labels[rows] != labels[columns])
        left, right, best = labels[rows[keep]], labels[columns[keep]], scores[keep]
        if left.size == 0:
            return cls.empty()
        order = np.lexsort((-best, right, left))
        left, right, best = left[order], right[order], best[order]
        first = np.ones(left.size, dtype=bool)
        first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
        return cls(left[first], right[first], best[first].astype(np.float32))

    @classmethod
    def empty(cls) -> RecordPairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))

    def __len__(self) -> int:
        return int(self.left.size)


def scan_block(
    template_format: TemplateFormat,
    vectors: np.ndarray,
    labels: np.ndarray,
    plan: BlockPlan,
    block: int,
    threshold: float,
    column_chunk: int = COLUMN_CHUNK,
    pause: Pause | None = None,
) -> RecordPairs:
    """Exact: the record pairs of ``block`` scoring at least ``threshold``, each block's rows
    against themselves and every later row. ``pause`` is called between column chunks."""
    start, end = plan.rows(block)
    n = vectors.shape[0]
    rows = vectors[start:end]
    buffer = np.empty((end - start, min(column_chunk, n - start)), dtype=np.float32)
    found_rows, found_columns, found_scores = [], [], []
    for first in range(start, n, column_chunk):
        if pause is not None:
            pause()
        last = min(n, first + column_chunk)
        scores = score_matrix(template_format.metric, rows, vectors[first:last], out=buffer[:, : last - first])
        hit_rows, hit_columns = np.nonzero(scores >= threshold)
        found_rows.append(hit_rows + start)
        found_columns.append(hit_columns + first)
        found_scores.append(scores[hit_rows, hit_columns])
    return RecordPairs.of_rows(
        labels, np.concatenate(found_rows), np.concatenate(found_columns), np.concatenate(found_scores)
    )


def build_shortlist(template_format: TemplateFormat, vectors: np.ndarray) -> ShortlistIndex:
    """The PQ fast-scan codes of every row, for :func:`shortlist_block`."""
    configure_faiss()
    return ShortlistIndex.build(template_format, vectors, TRAINING_SAMPLE)


def shortlist_block(
    template_format: TemplateFormat,
    vectors: np.ndarray,
    labels: np.ndarray,
    plan: BlockPlan,
    block: int,
    threshold: float,
    shortlist: ShortlistIndex,
    length: int = SHORTLIST_LENGTH,
) -> RecordPairs:
    """Approximate: each row of ``block`` searched in ``shortlist``, its proposals re-scored
    exactly, the pairs at or above ``threshold`` kept (a pair is found from its first row)."""
    start, end = plan.rows(block)
    store = TemplateStore(template_format)
    store.attach(np.arange(vectors.shape[0], dtype=np.int64), vectors)  # a row's label is its position
    probes = np.ascontiguousarray(vectors[start:end])
    use_threads_for(probes.shape[0])
    columns, scores = shortlist.search(probes, min(length, vectors.shape[0]), store.rescore)
    rows = np.broadcast_to(np.arange(start, end, dtype=np.int64)[:, None], columns.shape)
    hit = (scores >= threshold) & (columns >= 0)
    return RecordPairs.of_rows(labels, rows[hit], columns[hit], scores[hit])


def clusters(left: np.ndarray, right: np.ndarray) -> list[list[int]]:
    """Connected components of the pair graph (union-find with path halving), each sorted, in
    the order of their smallest member."""
    ids, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    parent = np.arange(ids.size)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    half = left.size
    for a, b in zip(inverse[:half].tolist(), inverse[half:].tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for node in range(ids.size):
        groups.setdefault(root(node), []).append(int(ids[node]))
    return sorted((sorted(group) for group in groups.values()), key=lambda group: group[0])
