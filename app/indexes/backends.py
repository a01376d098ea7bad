"""Where a gallery's matcher index lives: in this process (default) or over Ray shard actors.

Both backends hand the registry an object with the same interface (:class:`MatcherIndex`); the
rest of the service never knows which one it has. The Ray backend is imported only when configured,
so the default service does not need Ray installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.core.config import Settings
from app.indexes.exceptions import ShardsUnplaceable
from matcher import (
    GalleryIndex,
    IndexKind,
    IndexPolicy,
    SearchResult,
    ShardPlacementError,
    SnapshotKey,
    TemplateFormat,
    read_manifest,
)
from matcher.plain_copies import SharedPlainCopies

log = logging.getLogger(__name__)

Refill = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""() -> the gallery's (record ids, templates) chunks, read from the database."""


class MatcherIndex(Protocol):
    """What the service uses of a gallery's matcher index, whichever backend holds it: a
    :class:`LocalIndex` or a :class:`matcher.sharded.ShardedGallery`."""

    format: TemplateFormat
    change_seq: int

    @property
    def kind(self) -> IndexKind: ...

    @property
    def template_count(self) -> int: ...

    @property
    def shard_count(self) -> int: ...

    def unavailable_shards(self) -> list[int]: ...

    def record_ids(self) -> np.ndarray: ...

    def search(
        self, probes: npt.ArrayLike, k: int, probe_groups: npt.ArrayLike | None = None, allow_partial: bool = False
    ) -> SearchResult: ...

    def score_record(self, record_id: int, probes: npt.ArrayLike) -> float | None: ...

    def sample_templates(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]: ...

    def nonmated_top_scores(self, searches: int, seed: int = 0) -> np.ndarray: ...

    def nonmated_pair_scores(self, pairs: int, seed: int = 0) -> np.ndarray: ...

    def add(self, record_ids: npt.ArrayLike, templates: npt.ArrayLike) -> None: ...

    def apply(
        self, change_seq: int, removed: npt.ArrayLike, record_ids: npt.ArrayLike, templates: npt.ArrayLike | None
    ) -> None: ...

    def rebuild(self, kind: IndexKind | None = None) -> None: ...

    def save(self, path: Path, change_seq: int) -> None: ...

    def close(self) -> None: ...


class LocalIndex(GalleryIndex):
    """The in-process index, with the answers a sharded gallery gives the service: the whole
    gallery is one shard, never unavailable, and there is nothing to close; its snapshots are
    sealed with ``snapshot_key`` when it has one."""

    snapshot_key: SnapshotKey | None = None

    def save(self, path: Path, change_seq: int, key: SnapshotKey | None = None) -> None:
        super().save(path, change_seq, key or self.snapshot_key)

    @property
    def shard_count(self) -> int:
        return 1

    def unavailable_shards(self) -> list[int]:
        return []

    def search(
        self, probes: npt.ArrayLike, k: int, probe_groups: npt.ArrayLike | None = None, allow_partial: bool = False
    ) -> SearchResult:
        """As :meth:`GalleryIndex.search`; ``allow_partial`` changes nothing, as no part can be missing."""
        return super().search(probes, k, probe_groups)

    def close(self) -> None:
        """Nothing to release: the index is plain memory in this process."""


class IndexBackend(Protocol):
    """``key``: the index's snapshots are sealed with it (None: in clear)."""

    name: str

    def check_room(self) -> None:
        """Raise ShardsUnplaceable now if one more gallery's index would not fit."""

    def create(
        self,
        gallery_id: int,
        template_format: TemplateFormat,
        path: Path,
        refill: Refill,
        empty_seq: int | None,
        key: SnapshotKey | None = None,
    ) -> MatcherIndex:
        """A new gallery without data: empty at change ``empty_seq``, or (None) to be loaded."""

    def read_manifest(self, path: Path) -> dict[str, Any]:
        """The snapshot's manifest (change_seq, template_count, template_format); raises
        FileNotFoundError when there is none and SnapshotError when it is unusable."""

    def load(self, gallery_id: int, path: Path, refill: Refill, key: SnapshotKey | None = None) -> MatcherIndex:
        """The gallery as its snapshot holds it; raises SnapshotError unless intact (and sealed
        with ``key``, when one is given)."""


class LocalBackend:
    """FAISS in this process: the default. ``plain_copies``: where sealed snapshots are
    decrypted once for every process of the node (None: into each process's memory)."""

    name = "local"

    def __init__(self, policy: IndexPolicy, plain_copies: SharedPlainCopies | None = None) -> None:
        self.policy = policy
        self.plain_copies = plain_copies

    def check_room(self) -> None:
        """Always room: an index here is this process's memory, which nothing reserves."""

    def create(
        self,
        gallery_id: int,
        template_format: TemplateFormat,
        path: Path,
        refill: Refill,
        empty_seq: int | None,
        key: SnapshotKey | None = None,
    ) -> MatcherIndex:
        index = LocalIndex(template_format, self.policy)
        index.change_seq, index.snapshot_key = empty_seq or 0, key
        return index

    def read_manifest(self, path: Path) -> dict[str, Any]:
        if not path.exists():
            raise FileNotFoundError(path)
        return read_manifest(path)

    def load(self, gallery_id: int, path: Path, refill: Refill, key: SnapshotKey | None = None) -> MatcherIndex:
        index = LocalIndex.load(path, self.policy, key, self.plain_copies)
        index.snapshot_key = key
        return index


class RayBackend:
    """Each gallery over ``shards`` Ray actors (see :mod:`matcher.sharded`). A cluster started
    here (``local``) has only this machine's CPUs: each gallery gets as many shards as they hold,
    rather than shards that would wait forever for CPUs."""

    name = "ray"

    def __init__(self, policy: IndexPolicy, settings: Settings) -> None:
        from matcher import capacity, sharded

        self.policy = policy
        self.sharded, self.capacity = sharded, capacity
        self.sharding = sharded.ShardingPolicy(
            shard_count=settings.ray_shards,
            cpus_per_shard=settings.ray_cpus_per_shard,
            search_timeout_s=settings.ray_timeout_s,
            placement_timeout_s=settings.ray_placement_timeout_s,
        )
        sharded.connect(settings.ray_address)
        if settings.ray_address == "local":
            cpus, _ = capacity.cluster_cpus()
            self.sharding = self.sharding.fitted_to(cpus)
            log.info(
                "local Ray cluster: shards fitted to its CPUs",
                extra={
                    "event": {
                        "cpus": cpus,
                        "asked": {"shards": settings.ray_shards, "cpus_per_shard": settings.ray_cpus_per_shard},
                        "shards": self.sharding.shard_count,
                        "cpus_per_shard": self.sharding.cpus_per_shard,
                    }
                },
            )

    def check_room(self) -> None:
        with placed("a new gallery"):
            self.capacity.check_cpus(self.sharding.shard_count, self.sharding.cpus_per_shard)

    def create(
        self,
        gallery_id: int,
        template_format: TemplateFormat,
        path: Path,
        refill: Refill,
        empty_seq: int | None,
        key: SnapshotKey | None = None,
    ) -> MatcherIndex:
        with placed(f"gallery {gallery_id}"):
            return self.sharded.ShardedGallery(
                gallery_id, template_format, self.policy, self.sharding, path, refill, empty_seq=empty_seq, key=key
            )

    def read_manifest(self, path: Path) -> dict[str, Any]:
        return self.sharded.read_manifests(path, self.sharding.shard_count)

    def load(self, gallery_id: int, path: Path, refill: Refill, key: SnapshotKey | None = None) -> MatcherIndex:
        manifest = self.read_manifest(path)
        template_format = TemplateFormat.from_dict(manifest["template_format"])
        with placed(f"gallery {gallery_id}"):
            return self.sharded.ShardedGallery(
                gallery_id, template_format, self.policy, self.sharding, path, refill, fresh=False, key=key
            )


@contextmanager
def placed(gallery: str) -> Iterator[None]:
    """The matcher's refusal to place a gallery's shards, as the service's (a 503 over HTTP)."""
    try:
        yield
    except ShardPlacementError as error:
        details = {
            "shards": error.shards,
            "cpus_per_shard": error.cpus_per_shard,
            "cpus_needed": error.cpus_needed,
            "cpus_total": error.cpus_total,
            "cpus_available": error.cpus_available,
        }
        raise ShardsUnplaceable(f"{gallery} cannot be placed: {error}", details=details) from error


def make_backend(settings: Settings, policy: IndexPolicy, plain_copies: SharedPlainCopies | None) -> IndexBackend:
    """``plain_copies`` serve the local backend; Ray's shard actors each load their own shard."""
    return RayBackend(policy, settings) if settings.matcher_backend == "ray" else LocalBackend(policy, plain_copies)
