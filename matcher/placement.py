"""Which shard holds a record, and how shard answers become one answer.

A record lives on exactly one shard, chosen by a stable hash of the gallery and the record id
(the database's id for a gallery's reference id), so an add, a replacement, a deletion or a
verification touches one shard, and every sample of a record is on the same shard: per-record
fusion inside a shard is then already the global fusion. The hash is SplitMix64's finaliser, a
fixed arithmetic function: the same record goes to the same shard in every process, on every
machine and in every version, which snapshots taken per shard rely on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matcher.fusion import SearchResult, rank_rows

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def shard_of(record_ids: np.ndarray, shard_count: int, gallery_key: int) -> np.ndarray:
    """The shard (0..shard_count-1) of each record id of a gallery."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    with np.errstate(over="ignore"):
        z = np.asarray(record_ids, dtype=np.int64).view(np.uint64) ^ (np.uint64(gallery_key) * _GOLDEN)
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(shard_count)).astype(np.int64)


def merge_shard_results(results: Sequence[SearchResult], k: int) -> SearchResult:
    """The top ``k`` records of each query over shards' own top-``k`` lists.

    Records are disjoint between shards, so the global top ``k`` is among the shards' top ``k``;
    the order is the single-index order (score descending, then record id), so the merged answer
    equals the one index's answer on the same data.
    """
    if len(results) == 1:
        return results[0]
    ids = np.concatenate([r.record_ids for r in results], axis=1)
    scores = np.concatenate([r.scores for r in results], axis=1)
    return rank_rows(ids, scores, k)
