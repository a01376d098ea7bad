"""The service's long-lived parts (settings, database, indexes) and their start and stop.

Start applies migrations, then opens every gallery's index; until that is done ``ready`` is
false and /readyz answers 503. A gallery whose shards the Ray cluster cannot place is refused
within seconds rather than waited for: the other galleries load and serve, and /readyz stays 503
naming it (``unplaced``) until the service is restarted on a cluster with the CPUs. Before it
reports ready, the index follower catches up on what other processes committed meanwhile; it
then keeps following them (app/indexes/follower.py). A background thread snapshots changed
indexes periodically.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.audit.keys import load_signing_key
from app.audit.log import check_signer
from app.audit.notes import Signer
from app.cases.service import expire_due_cases
from app.core.cache import CommittedRowsCache
from app.core.config import Settings
from app.core.throttle import Throttle
from app.db.notify import GALLERY_CHANGES, Listener, Notified
from app.db.session import make_engine, make_session_factory, transaction
from app.db.watch import on_committed_writes
from app.deduplication.worker import DeduplicationWorker
from app.encryption.keyring import Keyring, gallery_scope
from app.encryption.service import open_keyring
from app.federation.channel import PeerChannel
from app.federation.node import NodeIdentity, load_node
from app.federation.notifier import ChangeNotifier, follow_outbound
from app.galleries import service as galleries
from app.galleries.changes import DatabaseChangeFeed
from app.indexes.backends import MatcherIndex, make_backend
from app.indexes.exceptions import ShardsUnplaceable
from app.indexes.follower import Follower
from app.indexes.plain_copies import open_plain_copies
from app.indexes.registry import GallerySource, IndexRegistry
from app.matching import queue as search_queue
from app.matching.claims import Claimer
from app.matching.executor import CatchUp, SearchExecutor
from app.matching.leases import Leases
from app.matching.node_turn import NodeTurn
from app.matching.retention import erase_old_probes
from app.matching.scheduler import Scheduler
from app.matching.service import Matching as MatchingParts
from app.matching.terms import CHANNEL as TERMS_CHANNEL
from app.matching.terms import WATCHED
from app.matching.thresholds import ThresholdBook
from app.observability.metrics import Metrics, multiprocess_dir
from app.passes import Passes, PassesProcess, make_passes
from app.principals import key_cache
from matcher import IndexKind, IndexPolicy, Thresholds
from matcher.plain_copies import SharedPlainCopies
from matcher.tuning import set_thread_budget

log = logging.getLogger(__name__)

METRICS_SAMPLE_INTERVAL_S = 1.0


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    registry: IndexRegistry
    thresholds: ThresholdBook
    executor: SearchExecutor
    scheduler: Scheduler
    claimer: Claimer
    metrics: Metrics
    throttle: Throttle
    keys: CommittedRowsCache
    terms: CommittedRowsCache
    keyring: Keyring
    signer: Signer
    passes: Passes
    """The audit log's sequencer and the case linker: their on-demand work here, and their
    background passes unless those run in a child (``passes_process``)."""
    plain_copies: SharedPlainCopies | None
    """The node's decrypted snapshots this process maps (None: its own memory)."""
    deduplication: DeduplicationWorker
    passes_process: PassesProcess | None = None
    """The child running the sequencer's and the linker's passes (None: they run in threads here)."""
    node: NodeIdentity | None = None
    """This node's identity in a federation (None: no node key, in no federation)."""
    channel: PeerChannel | None = None
    """Signed messages to peer nodes (None without a node identity)."""
    ready: bool = False
    unplaced: list[str] = field(default_factory=list)
    """Why galleries have no index after start (their shards found no CPUs): /readyz names them."""
    follower: Follower | None = None
    catch_up: CatchUp | None = None
    """Where other processes may commit (``Settings.shared_database``): what brings indexes up to
    the database before they answer (app/indexes/follower.py ``Follower.catch_up_on``)."""
    notified: list[Notified] = field(default_factory=list)
    """PostgreSQL: empty the caches of terms and keys when another process changed their rows."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings, *, offline: bool = False) -> Runtime:
        """``offline``: for a command run with the service stopped (bulk loads), whose large
        commits leave SQLite's checkpoints to a thread (app/db/checkpoints.py)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.processes > 1:  # the cores are shared: N processes' OpenMP threads must not oversubscribe them
            set_thread_budget((os.cpu_count() or 1) // settings.processes)
        engine = make_engine(settings.sqlalchemy_url, background_checkpoints=offline)
        policy = IndexPolicy(
            exact_max_templates=settings.exact_max_templates, shortlist_length=settings.shortlist_length
        )
        keyring = Keyring(settings.encrypt_at_rest)
        plain_copies = open_plain_copies(settings)
        backend = make_backend(settings, policy, plain_copies)
        sessions = make_session_factory(engine)
        read_sessions = make_session_factory(make_engine(settings.sqlalchemy_url, read_only=True))
        keyring.install(sessions)
        keyring.install(read_sessions)
        metrics = Metrics()
        registry = IndexRegistry(
            settings.index_dir,
            policy,
            DatabaseChangeFeed(read_sessions),
            backend,
            keyring.snapshot_key,
            metrics.index_change_lag.labels(str(os.getpid())).observe,  # each process its own lag
        )
        thresholds = ThresholdBook(registry, sessions, metrics, searches=settings.calibration_searches)
        leases = Leases(settings.search_lease_s)
        executor = SearchExecutor(sessions, registry, thresholds, metrics, leases)
        scheduler = Scheduler(
            executor.run,
            settings.search_workers,
            settings.max_batch_searches,
            matching_slots=settings.search_workers if settings.matcher_backend == "ray" else 1,
            node_turn=NodeTurn(settings.data_dir / "matching.lock")
            if settings.processes > 1 and settings.matcher_backend != "ray"
            else None,
        )
        claimer = Claimer(sessions, leases, scheduler, metrics, settings.search_claim_poll_s)
        metrics.watch_queue(lambda: scheduler.depth, lambda: leases.count)
        metrics.watch_indexes(registry.sizes)
        throttle = Throttle(
            settings.requests_per_minute, settings.failed_auth_per_minute, settings.federation_requests_per_minute
        )
        keys = CommittedRowsCache(settings.key_cache_s)
        terms = CommittedRowsCache(settings.key_cache_s)
        on_committed_writes(engine, WATCHED, terms.invalidate, TERMS_CHANNEL)
        on_committed_writes(engine, key_cache.WATCHED, keys.invalidate, key_cache.CHANNEL)
        signer = load_signing_key(settings.audit_key_path)
        node = load_node(settings.node_key_path)
        channel = (
            PeerChannel(node, metrics, settings.federation_timeout_s, settings.federation_signature_window_s)
            if node is not None
            else None
        )
        deduplication = DeduplicationWorker(
            sessions,
            read_sessions,
            lambda: scheduler.depth > 0,
            settings.deduplication_lease_s,
            settings.deduplication_poll_s,
            metrics,
        )

        def link_thresholds(gallery_id: int) -> Thresholds | None:
            if not registry.is_loaded(gallery_id):
                return None
            return thresholds.for_verification(gallery_id, settings.link_fmr).thresholds

        passes = make_passes(settings, engine, sessions, read_sessions, signer, metrics, link_thresholds)
        return cls(
            settings,
            engine,
            sessions,
            read_sessions,
            registry,
            thresholds,
            executor,
            scheduler,
            claimer,
            metrics,
            throttle,
            keys,
            terms,
            keyring,
            signer,
            passes,
            plain_copies,
            deduplication,
            node=node,
            channel=channel,
        )

    @property
    def matching(self) -> MatchingParts:
        """What an identification runs on, for the routes and the federation that submit one."""
        return MatchingParts(
            self.sessions, self.read_sessions, self.scheduler, self.executor, self.settings, self.terms
        )

    def open_keyring(self) -> None:
        """Unlock the data keys (a wrong or missing master key stops the start here, not as
        empty galleries later) and seal any clear data; migrations already applied. The audit
        log's key is checked here too: another node's log is never signed with a key of its own."""
        open_keyring(self.sessions, self.keyring, self.settings)
        check_signer(self.sessions, self.signer)

    def start_indexes(self) -> None:
        """Open every gallery's index (keyring open), claim the searches no live process holds
        (those left by the last process among them), then report ready. The audit log's
        sequencer starts first: it needs no index. With ``background_process``, the sequencer and
        the linker run in a child process (app/passes.py), started once this one is ready, so that
        its start does not compete with the indexes' load; this process's sequencer only answers
        on-demand checkpoints. The caches of keys and terms listen first: a single process serves
        while it loads."""
        for channel, cache in ((TERMS_CHANNEL, self.terms), (key_cache.CHANNEL, self.keys)):
            notified = Notified.for_engine(self.engine, channel, cache.invalidate)
            if notified is not None:
                notified.start()
                self.notified.append(notified)
        if not self.settings.background_process:
            self.passes.sequencer.start()  # on PostgreSQL, it sequences once this process leads (below)
        self.open_indexes()
        self.follower = self._follower()
        self.follower.run_once()  # what other processes committed while the indexes opened
        if self.settings.shared_database:
            self.catch_up = self.follower.catch_up_on
            self.executor.catch_up_first(self.catch_up)
        self.claimer.start()
        self.scheduler.start()
        self.deduplication.start()
        if not self.settings.background_process:
            self.passes.leadership.start()  # not while the indexes load: the lead would idle meanwhile
            self.passes.linker.start()
            self.scheduler.after_batch(self.passes.linker.wake)
        _keep_what_start_allocated_out_of_collections()
        self.ready = True
        if self.settings.background_process:
            self.passes_process = PassesProcess(self.settings, self.metrics.background_restarts)
            self.passes_process.start()
            self.scheduler.after_batch(self.passes_process.wake)
        self.follower.start()
        loops = [(self._snapshot_loop, "snapshotter"), (self._expiry_loop, "expiry")]
        if multiprocess_dir() is not None:
            loops.append((self._metrics_loop, "metrics-sampler"))
        if self.channel is not None:
            loops += [(self._notify_loop, "peer-notifier"), (self._follow_loop, "peer-follower")]
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.deduplication.stop()
        if self.passes_process is not None:
            self.passes_process.stop()
        self.scheduler.stop()
        self.claimer.stop()
        self.passes.stop()
        if self.follower is not None:
            self.follower.stop()
        for notified in self.notified:
            notified.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.ready:
            self.registry.snapshot_all()
        self.registry.close_all()
        self.release_plain_copies()
        self.ready = False
        gc.unfreeze()  # what the start froze may be collected again (a process that opens another runtime)
        self.metrics.close()
        if self.channel is not None:
            self.channel.close()
        self.engine.dispose()
        if self.read_sessions.kw["bind"] is not self.engine:
            self.read_sessions.kw["bind"].dispose()

    def release_plain_copies(self) -> None:
        """Stop using the node's decrypted snapshots; the data folder's last process removes
        them, so that no clear template outlives the service in memory."""
        if self.plain_copies is not None:
            removed = self.plain_copies.close()
            log.info("shared decrypted snapshots released", extra={"event": {"removed": len(removed)}})

    def gallery_source(self, gallery_id: int) -> GallerySource:
        with self.read_sessions() as session:
            state = galleries.indexed_state(session, gallery_id)
            if state is None:
                raise KeyError(gallery_id)
            gallery, template_count = state
            return GallerySource(gallery.id, galleries.template_format(gallery), gallery.change_seq, template_count)

    def stream_templates(self, gallery_id: int, dimension: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Through the reading engine: a gallery read, decrypted and indexed for seconds or
        minutes must not hold SQLite's writers' turn meanwhile. Held, it stopped every write of
        the service during an index's load. With the Ray backend it could also deadlock, since a
        shard restored during a rebuild refills through this same stream."""
        with self.read_sessions() as session:
            yield from galleries.iter_gallery_templates(session, gallery_id, dimension)

    def gallery_ids(self) -> list[int]:
        with self.read_sessions() as session:
            return [g.id for g in galleries.all_galleries(session)]

    def open_index(self, gallery_id: int) -> str:
        """Load the gallery's index from a current snapshot, or rebuild it from the database and
        snapshot it; returns how ("snapshot", "caught up: ...", "rebuilt: <why>")."""
        with self.read_sessions() as session:  # created by another process: its data key is new here
            self.keyring.learn(session, gallery_scope(gallery_id))
        with self.registry.snapshot_lock(gallery_id):  # a snapshot rebuilt once for every process
            how = self.registry.open(self.gallery_source(gallery_id), self.stream_templates)
        self.metrics.index_loads.labels(how.split(":")[0]).inc()
        return how

    def rebuild_index(self, gallery_id: int, kind: IndexKind | None = None) -> MatcherIndex:
        """Rebuild from the database whatever the snapshot holds (``kind`` pins exact or
        approximate search), snapshot it, and return it."""
        self.registry.rebuild(self.gallery_source(gallery_id), self.stream_templates, kind)
        return self.registry.get(gallery_id)

    def open_indexes(self) -> None:
        for gallery_id in self.gallery_ids():
            self.open_placed_index(gallery_id)

    def current_index(self, gallery_id: int) -> MatcherIndex:
        """The gallery's index with every change committed before this call, whichever process
        or node committed it."""
        if self.catch_up is not None:
            self.catch_up([gallery_id], lambda: None)
        return self.registry.get(gallery_id)

    def open_placed_index(self, gallery_id: int) -> None:
        """Open the gallery's index; one whose shards the cluster cannot place is left without,
        named by /readyz."""
        try:
            self.open_index(gallery_id)
        except ShardsUnplaceable as error:
            log.error("index not loaded", extra={"event": {"gallery_id": gallery_id, "reason": error.message}})
            self.unplaced.append(error.message)

    def _follower(self) -> Follower:
        """The thread that applies what other processes commit (app/indexes/follower.py)."""
        return Follower(
            self.registry,
            self.registry.feed,
            self.open_placed_index,
            self.rebuild_index,
            Listener.for_engine(self.engine, GALLERY_CHANGES),
            self.settings.change_poll_s,
        )

    def expire_due(self) -> None:
        """Cases and queued searches past their deadline become expired; probes of cases over
        for longer than the retention period are erased."""
        with transaction(self.sessions) as session:
            expire_due_cases(session)
            erase_old_probes(session, self.settings.probe_retention_days)
            self.metrics.searches.labels("expired").inc(
                len(search_queue.expire_queued(session, self.executor.leases.owner))
            )

    def _expiry_loop(self) -> None:
        while not self._stop.wait(self.settings.expiry_interval_s):
            try:
                self.expire_due()
            except Exception:
                log.exception("expiry pass failed")

    def _notify_loop(self) -> None:
        """Peers are told of changes to the searches they asked for (app/federation/notifier.py)."""
        assert self.channel is not None
        notifier = ChangeNotifier(
            self.sessions, self.read_sessions, self.channel, self.settings.federation_poll_interval_s
        )
        while not self._stop.wait(self.settings.federation_notify_interval_s):
            try:
                notifier.run_once()
            except Exception:
                log.exception("peer notification pass failed")

    def _follow_loop(self) -> None:
        """This node's searches at peers are resent or polled (app/federation/notifier.py)."""
        assert self.channel is not None
        while not self._stop.wait(self.settings.federation_poll_interval_s):
            try:
                follow_outbound(self.sessions, self.channel)
            except Exception:
                log.exception("peer follow pass failed")

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.settings.snapshot_interval_s):
            try:
                written = self.registry.snapshot_all()
                if written:
                    log.info("snapshots written", extra={"event": {"galleries": written}})
            except Exception:
                log.exception("periodic snapshot failed")

    def _metrics_loop(self) -> None:
        """Several processes: the others' scrapes read this one's live gauges from its files."""
        while not self._stop.wait(METRICS_SAMPLE_INTERVAL_S):
            self.metrics.sample()


def _keep_what_start_allocated_out_of_collections() -> None:
    """What the start allocated (modules, routes, models, the indexes' Python side) lives as long
    as the process: frozen, no collection scans it again. A full collection stops every thread;
    at 1M templates one took 90-120 ms, three times in ten seconds of one client's
    identifications, each delaying the request in flight by as much. Frozen: 8-11 ms. (No
    collection first: it would lengthen every start by as much, to free a few import cycles.)"""
    gc.freeze()
