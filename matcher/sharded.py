"""A gallery split over shards that run as Ray actors, behind the interface of one
:class:`GalleryIndex`, plus what only shards raise: how many there are, which are unavailable,
searches that may answer without some of them, and actors to stop (:meth:`ShardedGallery.close`).

Each shard is a Ray actor (:class:`matcher.shard.GalleryShard`) holding a :class:`GalleryIndex`
and its own snapshot file. A record lives on one shard (:func:`matcher.placement.shard_of`), so
writes and verifications touch one shard and a search is scattered to every shard and merged
(:func:`matcher.placement.merge_shard_results`), giving the one index's exact answer.

Ray restarts a dead shard's actor, which reruns its constructor and so reloads its snapshot. The
coordinator (this process) notices the new incarnation, keeps the shard out of searches, and
brings it up to date: it replays the changes applied since the last snapshot of every shard (its
journal, each entry a committed database change), or, when the shard has no usable snapshot,
refills it from the database through the caller's ``refill`` stream. Meanwhile a search raises
:class:`ShardUnavailableError`, unless the caller accepted partial results, which then name the
missing shards. Ray is an optional dependency: only this module, :mod:`matcher.shard` and
:mod:`matcher.capacity` (the shards' CPUs) import it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from matcher.capacity import fitted_shards, release_cpus, reserve_cpus
from matcher.errors import InvalidTemplateError, ShardUnavailableError, SnapshotError
from matcher.formats import TemplateFormat
from matcher.fusion import NO_RECORD, SearchResult
from matcher.gallery import IndexKind, IndexPolicy, leave_one_out_top_scores
from matcher.placement import merge_shard_results, shard_of
from matcher.sealing import SnapshotKey
from matcher.shard import UNKNOWN_SEQ, GalleryShard, ShardNotLoadedError, ShardState, read_manifests, shard_path
from matcher.tuning import HUGE_PAGES_TUNABLE
from matcher.validation import prepare_ids, prepare_templates

__all__ = ["ShardState", "ShardedGallery", "ShardingPolicy", "cluster_shards", "connect", "read_manifests"]

log = logging.getLogger(__name__)

NAMESPACE = "readmit"
"""Ray namespace of every shard actor, so that ``readmit shards`` finds them by name."""

INLINE_BYTES = 100 * 1024
"""Probe arrays up to this size go inside each shard call rather than through the object store."""

TemplateChunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""() -> chunks of (record ids, templates) of the whole gallery, read from the source of truth."""


SHARD_DOWN = (RayActorError, GetTimeoutError, ShardNotLoadedError)
"""What a call to a shard raises when the shard, not the request, is the problem."""


@dataclass(frozen=True)
class ShardingPolicy:
    """How a gallery is split and how long the coordinator waits for its shards."""

    shard_count: int = 4
    cpus_per_shard: float = 1.0
    search_timeout_s: float = 60.0
    recovery_timeout_s: float = 600.0
    max_concurrency: int = 4
    placement_timeout_s: float = 10.0
    """How long a gallery's shards, as they start, wait for CPUs others hold before ShardPlacementError."""

    def fitted_to(self, cpus: float) -> ShardingPolicy:
        """This policy with as many shards as ``cpus`` can hold (:func:`fitted_shards`)."""
        shard_count, cpus_per_shard = fitted_shards(self.shard_count, self.cpus_per_shard, cpus)
        return replace(self, shard_count=shard_count, cpus_per_shard=cpus_per_shard)


@dataclass
class _Shard:
    handle: Any
    incarnation: str | None
    """The incarnation whose data is current; None while the shard is being restored."""
    templates: int = 0
    kind: str = IndexKind.EXACT.value
    restoring: bool = False


@dataclass
class _Change:
    change_seq: int
    removed: np.ndarray
    record_ids: np.ndarray
    templates: np.ndarray | None


@dataclass
class _Journal:
    """Changes applied since ``base_seq``, the last change every shard has in its snapshot."""

    base_seq: int
    changes: list[_Change] = field(default_factory=list)

    def after(self, change_seq: int) -> list[_Change]:
        return [c for c in self.changes if c.change_seq > change_seq]

    def trim(self, change_seq: int) -> None:
        self.base_seq = change_seq
        self.changes = self.after(change_seq)


class ShardedGallery:
    """All templates of one gallery over ``sharding.shard_count`` Ray actors."""

    def __init__(
        self,
        gallery_key: int,
        template_format: TemplateFormat,
        policy: IndexPolicy,
        sharding: ShardingPolicy,
        snapshot_path: Path,
        refill: TemplateChunks | None,
        empty_seq: int | None = None,
        fresh: bool = True,
        key: SnapshotKey | None = None,
    ) -> None:
        """Start the shard actors. ``fresh``: begin without data (the caller then adds it, or
        ``empty_seq`` says the gallery is empty at that change); else each shard loads its
        snapshot beside ``snapshot_path``, and :class:`SnapshotError` is raised unless all are
        there and at the same change. Every shard's CPUs are reserved first:
        :class:`ShardPlacementError` when the cluster cannot give them. ``key`` seals the shards'
        snapshots; Ray keeps it among the actors' creation arguments, to reload a restarted
        shard's snapshot."""
        self.gallery_key, self.format, self.policy, self.sharding = gallery_key, template_format, policy, sharding
        self.snapshot_path, self.refill = snapshot_path, refill
        self._write_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._closed = threading.Event()
        # first, so that a gallery refused for want of CPUs has touched no snapshot
        self._cpus = reserve_cpus(sharding.shard_count, sharding.cpus_per_shard, sharding.placement_timeout_s)
        if fresh:
            for i in range(sharding.shard_count):
                self.shard_path(i).unlink(missing_ok=True)
        generation = uuid.uuid4().hex[:8]
        names = [
            f"gallery-{gallery_key}-shard-{i}-of-{sharding.shard_count}-{generation}"
            for i in range(sharding.shard_count)
        ]
        actor = ray.remote(GalleryShard)  # type: ignore[call-overload]
        threads = max(1, int(sharding.cpus_per_shard))
        handles: list[Any] = [
            actor.options(
                name=name,
                namespace=NAMESPACE,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=sharding.max_concurrency,
                num_cpus=sharding.cpus_per_shard,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._cpus, placement_group_bundle_index=i),
                runtime_env={"env_vars": {"GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}},
            ).remote(name, template_format, policy, str(self.shard_path(i)), empty_seq, threads, key)
            for i, name in enumerate(names)
        ]
        states: list[ShardState] = ray.get([h.state.remote() for h in handles])
        if fresh and empty_seq is None:  # to be bulk loaded: empty in memory, nothing to restart from
            ray.get([h.reset.remote(s.incarnation, UNKNOWN_SEQ) for h, s in zip(handles, states, strict=True)])
            states = ray.get([h.state.remote() for h in handles])
        self._shards = [_Shard(h, s.incarnation, s.templates, s.kind) for h, s in zip(handles, states, strict=True)]
        seqs = {s.change_seq for s in states}
        if not fresh and (len(seqs) != 1 or UNKNOWN_SEQ in seqs):
            self.close()
            raise SnapshotError(f"{snapshot_path}: shard snapshots missing or at different changes ({sorted(seqs)})")
        self._journal = _Journal(base_seq=states[0].change_seq)
        self.change_seq = self._journal.base_seq

    def shard_path(self, shard: int) -> Path:
        return shard_path(self.snapshot_path, shard, self.sharding.shard_count)

    # -- reading -----------------------------------------------------------------------------

    @property
    def kind(self) -> IndexKind:
        return IndexKind(self._shards[0].kind)

    @property
    def template_count(self) -> int:
        return sum(s.templates for s in self._shards)

    @property
    def shard_count(self) -> int:
        return len(self._shards)

    def unavailable_shards(self) -> list[int]:
        """Shards kept out of searches while they are restored (known without asking them)."""
        return [i for i, shard in enumerate(self._shards) if shard.incarnation is None]

    @property
    def record_count(self) -> int:
        return int(self.record_ids().size)

    def record_ids(self) -> np.ndarray:
        parts = self._gather(lambda h, _: h.record_ids.remote(), allow_partial=False)[0]
        return np.unique(np.concatenate(list(parts.values())))

    def search(
        self, probes: npt.ArrayLike, k: int, probe_groups: npt.ArrayLike | None = None, allow_partial: bool = False
    ) -> SearchResult:
        """Top-``k`` records per query over every shard, as :meth:`GalleryIndex.search`.
        ``allow_partial``: answer from the shards that answered and name the others in
        ``missing_shards`` instead of raising :class:`ShardUnavailableError`."""
        if k < 1:
            raise InvalidTemplateError(f"k must be at least 1, got {k}")
        prepared = prepare_templates(probes, self.format, what="probe", normalise=False)
        groups = (
            np.arange(prepared.shape[0], dtype=np.int64)
            if probe_groups is None
            else prepare_ids(probe_groups, prepared.shape[0], what="probe group")
        )
        probes_arg: Any
        groups_arg: Any
        if prepared.nbytes > INLINE_BYTES:  # one copy in the object store for every shard to read
            probes_arg, groups_arg = ray.put(prepared), ray.put(groups)
        else:  # small: sent inside each call, saving a store round trip (about 1 ms each)
            probes_arg, groups_arg = prepared, groups
        answers, missing = self._gather(lambda h, _: h.search.remote(probes_arg, k, groups_arg), allow_partial)
        if not answers:
            queries = int(groups.max()) + 1
            empty = SearchResult(np.full((queries, k), NO_RECORD, np.int64), np.full((queries, k), -np.inf, np.float32))
            return replace(empty, missing_shards=tuple(missing))
        merged = merge_shard_results([answers[i] for i in sorted(answers)], k)
        return replace(merged, missing_shards=tuple(missing))

    def score_record(self, record_id: int, probes: npt.ArrayLike) -> float | None:
        shard = int(shard_of(np.array([record_id]), len(self._shards), self.gallery_key)[0])
        prepared = prepare_templates(probes, self.format, what="probe", normalise=False)
        answers, _ = self._gather(lambda h, _: h.score_record.remote(record_id, prepared), False, only=[shard])
        return answers[shard]  # type: ignore[no-any-return]

    def sample_templates(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Templates drawn at random over the shards, in proportion to their sizes."""
        shares = self._shares(count)
        parts, _ = self._gather(lambda h, i: h.sample_templates.remote(shares[i], seed + i), False)
        labels = np.concatenate([parts[i][0] for i in sorted(parts)])
        vectors = np.concatenate([parts[i][1] for i in sorted(parts)])
        return labels, vectors

    def nonmated_top_scores(self, searches: int, seed: int = 0) -> np.ndarray:
        return leave_one_out_top_scores(self.search, *self.sample_templates(searches, seed))

    def nonmated_pair_scores(self, pairs: int, seed: int = 0) -> np.ndarray:
        """Pairs drawn inside each shard, in proportion to its size: records are placed on
        shards at random, so these are draws from the gallery's non-mated pair distribution."""
        shares = self._shares(pairs)
        parts, _ = self._gather(lambda h, i: h.nonmated_pair_scores.remote(shares[i], seed + i), False)
        return np.concatenate([parts[i] for i in sorted(parts)])

    def health(self) -> list[ShardState]:
        """Every shard's own report, marked unavailable while it is being restored."""
        states = []
        for i, shard in enumerate(self._shards):
            try:
                state: ShardState = ray.get(shard.handle.state.remote(), timeout=self.sharding.search_timeout_s)
                if shard.incarnation is not None and state.incarnation != shard.incarnation:
                    self._lost(i)  # restarted unnoticed: restore it now rather than at the next search
                states.append(replace(state, available=state.incarnation == shard.incarnation))
            except SHARD_DOWN:
                self._lost(i)
                states.append(ShardState(f"shard {i}", "", -1, shard.templates, 0, shard.kind, 0.0, 0, "", False))
        return states

    # -- writing -----------------------------------------------------------------------------

    def add(self, record_ids: npt.ArrayLike, templates: npt.ArrayLike) -> None:
        """Bulk load, each template to its record's shard (no journal: a gallery being built is
        snapshotted before use)."""
        prepared = prepare_templates(templates, self.format, normalise=False)
        labels = prepare_ids(record_ids, prepared.shape[0])
        placement = shard_of(labels, len(self._shards), self.gallery_key)
        parts = {i: (labels[placement == i], prepared[placement == i]) for i in np.unique(placement).tolist()}
        with self._write_lock:
            self._write(parts, "add")

    def apply(
        self, change_seq: int, removed: npt.ArrayLike, record_ids: npt.ArrayLike, templates: npt.ArrayLike | None
    ) -> None:
        """Apply a committed change to the shards its records live on, and journal it so that a
        shard restored from an older snapshot can catch up."""
        change = _Change(
            change_seq,
            np.asarray(removed, dtype=np.int64),
            np.asarray(record_ids, dtype=np.int64),
            None if templates is None else prepare_templates(templates, self.format, normalise=False),
        )
        with self._write_lock:
            self._journal.changes.append(change)
            self.change_seq = change_seq
            self._write(self._route(change), "apply")

    def rebuild(self, kind: IndexKind | None = None) -> None:
        with self._write_lock:
            self._write({i: (kind,) for i in range(len(self._shards))}, "rebuild")
            self._refresh_counts()

    def save(self, path: Path, change_seq: int) -> None:
        """Every shard writes its snapshot beside ``path``; once all have, the journal restarts."""
        with self._write_lock:
            unavailable = self.unavailable_shards()
            self._write({i: (change_seq,) for i in range(len(self._shards))}, "save")
            unavailable = sorted(set(unavailable) | set(self.unavailable_shards()))
            if unavailable:  # the journal must still cover those shards
                raise ShardUnavailableError(unavailable, f"gallery {self.gallery_key}: snapshot incomplete")
            self._journal.trim(change_seq)
            self.change_seq = change_seq

    def close(self) -> None:
        """Stop the shard actors (for good: Ray does not restart them) and free their CPUs."""
        self._closed.set()
        for shard in self._shards:
            ray.kill(shard.handle, no_restart=True)
        release_cpus(self._cpus)

    # -- internals ---------------------------------------------------------------------------

    def _shares(self, total: int) -> list[int]:
        sizes = np.array([s.templates for s in self._shards], dtype=np.float64)
        if sizes.sum() == 0:
            return [0] * len(self._shards)
        return np.rint(total * sizes / sizes.sum()).astype(int).tolist()  # type: ignore[no-any-return]

    def _route(self, change: _Change, only: int | None = None) -> dict[int, tuple[Any, ...]]:
        """A change's part for each shard (or just for ``only``): (seq, removed, ids, templates)."""
        count = len(self._shards)
        removed_at = shard_of(change.removed, count, self.gallery_key)
        ids_at = shard_of(change.record_ids, count, self.gallery_key)
        parts = {}
        for i in range(count) if only is None else [only]:
            mine = ids_at == i
            if not (removed_at == i).any() and not mine.any():
                continue
            templates = None if change.templates is None else change.templates[mine]
            parts[i] = (change.change_seq, change.removed[removed_at == i], change.record_ids[mine], templates)
        return parts

    def _write(self, parts: dict[int, tuple[Any, ...]], method: str) -> None:
        """Call ``method`` on each available shard with its part and record its new size. A
        shard being restored is skipped (it catches up from the journal); one that dies or has
        restarted is put to restoring."""
        refs = {
            i: getattr(shard.handle, method).remote(shard.incarnation, *parts[i])
            for i, shard in enumerate(self._shards)
            if i in parts and shard.incarnation is not None
        }
        for i, ref in refs.items():
            try:
                self._shards[i].templates = ray.get(ref, timeout=self.sharding.recovery_timeout_s)
            except SHARD_DOWN:
                self._lost(i)

    def _gather(
        self, call: Callable[[Any, int], Any], allow_partial: bool, only: list[int] | None = None
    ) -> tuple[dict[int, Any], list[int]]:
        """Send a read ``call(handle, shard)`` to the shards (all, or ``only``) and collect the
        answers, accepted only from each shard's current incarnation."""
        targets = list(range(len(self._shards))) if only is None else only
        missing = [i for i in targets if self._shards[i].incarnation is None]
        for i in missing:  # a restore that gave up is tried again
            self._start_restore(i)
        refs = {i: call(self._shards[i].handle, i) for i in targets if i not in missing}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.sharding.search_timeout_s)
        answered = set(ready)
        answers: dict[int, Any] = {}
        for i, ref in refs.items():
            try:
                if ref not in answered:
                    raise GetTimeoutError(f"shard {i} did not answer in {self.sharding.search_timeout_s} s")
                answer = ray.get(ref)
            except SHARD_DOWN:
                self._lost(i)
                missing.append(i)
                continue
            incarnation, answer = answer
            if incarnation != self._shards[i].incarnation:  # restarted since it was brought up to date
                self._lost(i)
                missing.append(i)
                continue
            answers[i] = answer
        if missing and not allow_partial:
            raise ShardUnavailableError(missing, f"gallery {self.gallery_key}")
        return answers, sorted(missing)

    def _refresh_counts(self) -> None:
        for shard, state in zip(self._shards, ray.get([s.handle.state.remote() for s in self._shards]), strict=True):
            shard.templates, shard.kind = state.templates, state.kind

    def _lost(self, shard: int) -> None:
        """Take a shard out of use and restore it in the background."""
        with self._state_lock:
            if self._shards[shard].incarnation is None:
                return
            self._shards[shard].incarnation = None
        log.warning("shard lost, restoring", extra={"event": {"gallery": self.gallery_key, "shard": shard}})
        self._start_restore(shard)

    def _start_restore(self, shard: int) -> None:
        with self._state_lock:
            if self._shards[shard].restoring:
                return
            self._shards[shard].restoring = True
        threading.Thread(target=self._restore, args=(shard,), name=f"restore-shard-{shard}", daemon=True).start()

    def _restore(self, shard: int) -> None:
        """Wait for Ray to bring the actor back, then catch it up; again if it dies meanwhile."""
        event = {"gallery": self.gallery_key, "shard": shard}
        handle = self._shards[shard].handle
        deadline = time.monotonic() + self.sharding.recovery_timeout_s
        try:
            while time.monotonic() < deadline and not self._closed.is_set():
                try:
                    state: ShardState = ray.get(handle.state.remote(), timeout=5)
                    with self._write_lock:
                        how = self._catch_up(shard, handle, state)
                        self._shards[shard].incarnation = state.incarnation
                    log.warning("shard restored", extra={"event": {**event, "from": how}})
                    return
                except SHARD_DOWN:
                    time.sleep(0.2)
            if not self._closed.is_set():
                log.error("shard not back in time; next search tries again", extra={"event": event})
        except Exception:  # a thread of its own: say why, the next search tries again
            log.exception("shard cannot be restored", extra={"event": event})
        finally:
            self._shards[shard].restoring = False

    def _catch_up(self, shard: int, handle: Any, state: ShardState) -> str:
        """Bring a restarted shard to the coordinator's last change (write lock held)."""
        if state.change_seq != UNKNOWN_SEQ and state.change_seq >= self._journal.base_seq:
            changes = self._journal.after(state.change_seq)
            for change in changes:
                for part in self._route(change, only=shard).values():
                    ray.get(handle.apply.remote(state.incarnation, *part))
            self._shards[shard].templates = ray.get(handle.state.remote()).templates
            return f"snapshot at change {state.change_seq} + {len(changes)} journalled changes"
        if self.refill is None:
            raise ShardUnavailableError([shard], "no snapshot and no source to refill from")
        ray.get(handle.reset.remote(state.incarnation, self.change_seq))
        for chunk in _shard_chunks(self.refill(), shard, len(self._shards), self.gallery_key):
            self._shards[shard].templates = ray.get(handle.add.remote(state.incarnation, *chunk))
        return "refilled from the database"


def _shard_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], shard: int, shard_count: int, gallery_key: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for record_ids, templates in chunks:
        mine = shard_of(record_ids, shard_count, gallery_key) == shard
        if mine.any():
            yield record_ids[mine], templates[mine]


def connect(address: str, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:port``), or start a local
    one (``local``) for development and tests; does nothing when already connected."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False}
    with _own_sigterm():
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)


@contextmanager
def _own_sigterm() -> Iterator[None]:
    """Keep this process's SIGTERM handler through ``ray.init``, which replaces it, from the main
    thread, with one that exits on the spot: the service (uvicorn's handler) then skipped its
    stop, and the final snapshot with it, on every ``docker stop`` or ``systemctl stop``."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread sets handlers: Ray's init leaves them alone here too
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)


def cluster_shards(timeout_s: float = 10.0) -> list[ShardState]:
    """Every readmit shard actor in the connected cluster, as it reports itself (for
    ``readmit shards``, from outside the service process)."""
    states: list[ShardState] = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != NAMESPACE or not entry["name"].startswith("gallery-"):
            continue
        try:
            handle = ray.get_actor(entry["name"], namespace=NAMESPACE)
            states.append(cast(ShardState, ray.get(handle.state.remote(), timeout=timeout_s)))
        except (RayActorError, GetTimeoutError, ValueError):
            states.append(ShardState(entry["name"], "", -1, 0, 0, "unknown", 0.0, 0, "", False))
    return sorted(states, key=lambda s: s.name)
