"""One shard of a sharded gallery, as it runs inside its Ray actor: a :class:`GalleryIndex`
(the in-process code, not a copy) and its own snapshot file.

The coordinator (:mod:`matcher.sharded`) talks to it through Ray; this side knows nothing of the
other shards. Every answer names the incarnation that gave it, so that the coordinator can tell
a shard it brought up to date from one Ray has just restarted.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from matcher.errors import MatcherError, SnapshotError
from matcher.formats import TemplateFormat
from matcher.fusion import SearchResult
from matcher.gallery import GalleryIndex, IndexKind, IndexPolicy
from matcher.sealing import SnapshotKey
from matcher.snapshot import read_manifest
from matcher.tuning import configure_faiss, set_thread_budget

log = logging.getLogger(__name__)

UNKNOWN_SEQ = -1
"""A shard's change number when it holds no data it could vouch for (no snapshot yet)."""


class ShardNotLoadedError(MatcherError):
    """Raised inside a restarted shard that has no data yet: the coordinator restores it."""

    code = "shard_unavailable"


@dataclass(frozen=True)
class ShardState:
    """What a shard says of itself: for health reports and for the coordinator's checks."""

    name: str
    incarnation: str
    change_seq: int
    templates: int
    records: int
    kind: str
    rss_mb: float
    pid: int
    node: str
    available: bool = True


class GalleryShard:
    """One shard: a GalleryIndex and its snapshot. Runs inside a Ray actor; a restart reruns
    ``__init__``, which reloads the snapshot, or starts empty at ``empty_seq`` when there is none
    and the gallery was created empty, or else waits for a refill (``change_seq`` -1)."""

    def __init__(
        self,
        name: str,
        template_format: TemplateFormat,
        policy: IndexPolicy,
        snapshot_path: str,
        empty_seq: int | None,
        threads: int = 1,
        key: SnapshotKey | None = None,
    ) -> None:
        set_thread_budget(threads)  # the CPUs Ray reserved for this actor, not the whole node
        configure_faiss()
        self.name = name
        self.format, self.policy, self.path, self.key = template_format, policy, Path(snapshot_path), key
        self.incarnation = uuid.uuid4().hex
        self.index: GalleryIndex | None = None
        if self.path.exists():
            try:
                self.index = GalleryIndex.load(self.path, policy, key)
            except SnapshotError:
                log.warning("shard snapshot unusable, waiting for a refill", extra={"event": {"shard": name}})
        elif empty_seq is not None:
            self.index = GalleryIndex(template_format, policy)
            self.index.change_seq = empty_seq

    def _ready(self) -> GalleryIndex:
        if self.index is None:
            raise ShardNotLoadedError(f"shard {self.name} has no data yet")
        return self.index

    def state(self) -> ShardState:
        index = self.index
        return ShardState(
            name=self.name,
            incarnation=self.incarnation,
            change_seq=UNKNOWN_SEQ if index is None else index.change_seq,
            templates=0 if index is None else index.template_count,
            records=0 if index is None else index.record_count,
            kind="none" if index is None else index.kind.value,
            rss_mb=_rss_mb(),
            pid=os.getpid(),
            node=ray.get_runtime_context().get_node_id(),
        )

    # Reads answer (incarnation, result): the coordinator takes results only from the
    # incarnation it brought up to date.

    def search(self, probes: np.ndarray, k: int, probe_groups: np.ndarray) -> tuple[str, SearchResult]:
        return self.incarnation, self._ready().search(probes, k, probe_groups)

    def score_record(self, record_id: int, probes: np.ndarray) -> tuple[str, float | None]:
        return self.incarnation, self._ready().score_record(record_id, probes)

    def sample_templates(self, count: int, seed: int) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
        return self.incarnation, self._ready().sample_templates(count, seed)

    def nonmated_pair_scores(self, pairs: int, seed: int) -> tuple[str, np.ndarray]:
        return self.incarnation, self._ready().nonmated_pair_scores(pairs, seed)

    def record_ids(self) -> tuple[str, np.ndarray]:
        return self.incarnation, self._ready().record_ids()

    # Writes name the incarnation they are meant for and answer the shard's template count. A
    # restarted shard refuses writes meant for its predecessor: applied to its older data, they
    # would advance its change number past changes it lacks, which the restore then would skip.

    def _writable(self, incarnation: str) -> GalleryIndex:
        if incarnation != self.incarnation:
            raise ShardNotLoadedError(f"shard {self.name} restarted: a write for its predecessor")
        return self._ready()

    def apply(
        self,
        incarnation: str,
        change_seq: int,
        removed: np.ndarray,
        record_ids: np.ndarray,
        templates: np.ndarray | None,
    ) -> int:
        index = self._writable(incarnation)
        index.apply(change_seq, removed, record_ids, templates)
        return index.template_count

    def add(self, incarnation: str, record_ids: np.ndarray, templates: np.ndarray) -> int:
        index = self._writable(incarnation)
        index.add(record_ids, templates)
        return index.template_count

    def reset(self, incarnation: str, change_seq: int) -> int:
        """Start again empty, before a bulk load or a refill from the database."""
        if incarnation != self.incarnation:
            raise ShardNotLoadedError(f"shard {self.name} restarted: a reset for its predecessor")
        self.index = GalleryIndex(self.format, self.policy)
        self.index.change_seq = change_seq
        return 0

    def save(self, incarnation: str, change_seq: int) -> int:
        index = self._writable(incarnation)
        index.save(self.path, change_seq, self.key)
        return index.template_count

    def rebuild(self, incarnation: str, kind: IndexKind | None) -> int:
        index = self._writable(incarnation)
        index.rebuild(kind)
        return index.template_count


def shard_path(snapshot_path: Path, shard: int, shard_count: int) -> Path:
    """Where shard ``shard`` of a gallery snapshotted at ``snapshot_path`` keeps its snapshot."""
    return snapshot_path.with_name(f"{snapshot_path.name}.shard-{shard}-of-{shard_count}")


def read_manifests(snapshot_path: Path, shard_count: int) -> dict[str, Any]:
    """The gallery's manifest from its shards' manifests: the change they share and their total
    count. Raises FileNotFoundError when no shard has a snapshot, SnapshotError when some lack
    one or they are at different changes."""
    paths = [shard_path(snapshot_path, i, shard_count) for i in range(shard_count)]
    present = [path for path in paths if path.exists()]
    if not present:
        raise FileNotFoundError(snapshot_path)
    if len(present) < shard_count:
        raise SnapshotError(f"{len(present)} of {shard_count} shard snapshots present")
    manifests = [read_manifest(path) for path in paths]
    if len({m["change_seq"] for m in manifests}) != 1:
        raise SnapshotError("shard snapshots at different changes")
    return {**manifests[0], "template_count": sum(m["template_count"] for m in manifests)}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
