"""Prometheus metrics of one service instance, in its own registry (so that several apps in one
process, as in tests, never collide).

Under ``readmit serve --processes N`` a scrape reaches any one of the processes, so each writes
its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set
by the supervisor) and a scrape merges them all: counters and histograms summed over processes,
gauges per process (a ``pid`` label) for the processes alive. Gauges of live state (queue depth,
index sizes) are sampled from this process's parts, at each scrape and every second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric

from app.core.processes import alive

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLACK_BUCKETS = (0, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400, 540 * 86400)


@dataclass(frozen=True)
class IndexSize:
    gallery_id: int
    kind: str
    templates: int
    shards: int
    unavailable_shards: int
    changes_behind: int


class PassesMetrics:
    """What the background passes (app/passes.py) write: the audit sequencer's and the case
    linker's figures. Part of every serving process's :class:`Metrics`; alone in the passes' own
    process, which must not show the serving processes' per-process gauges (a queue of 0 under
    its pid)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.audit_sequencing_delay = Histogram(
            "readmit_audit_sequencing_delay_seconds",
            "from an audit event's append (in the transaction of the change it records) to its sequencing: "
            "seq, chain hash and Merkle leaf",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_pending = Gauge(
            "readmit_audit_pending_events",
            "audit events committed and not sequenced yet, at the sequencer's last look",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.audit_tree_size = Gauge(
            "readmit_audit_tree_size", "audit events in the Merkle tree", registry=r, multiprocess_mode="livemax"
        )
        self.audit_checkpoints = Counter("readmit_audit_checkpoints", "checkpoints signed", registry=r)
        self.case_links = Counter("readmit_case_links", "links found between cases", registry=r)
        self.passes_leading = Gauge(
            "readmit_background_passes_leading",
            "1 where this node runs the background passes (sequencer, linker): one process among every "
            "process and node of the database leads",
            registry=r,
            multiprocess_mode="livesum",
        )

    def close(self) -> None:
        """This process stops: its per-process gauges leave the merged view."""
        directory = multiprocess_dir()
        if directory is not None:
            multiprocess.mark_process_dead(os.getpid(), str(directory))


class Metrics(PassesMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.http_requests = Counter(
            "readmit_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "readmit_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "readmit_search_queue_wait_seconds", "time from submission to start", buckets=LATENCY_BUCKETS, registry=r
        )
        self.searches = Counter("readmit_searches", "searches ended, by outcome", ["outcome"], registry=r)
        self.deadline_slack = Histogram(
            "readmit_search_deadline_slack_seconds",
            "time left before the case deadline when a search ends",
            buckets=SLACK_BUCKETS,
            registry=r,
        )
        self.matcher_latency = Histogram(
            "readmit_matcher_search_seconds", "one matcher call", ["gallery"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.matcher_batch = Histogram(
            "readmit_matcher_batch_searches",
            "searches coalesced in one matcher call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.enrolled = Counter(
            "readmit_enrolled_records",
            "records sent to records:batch, by what became of them (change: inserted, updated, unchanged, rejected)",
            ["gallery", "change"],
            registry=r,
        )
        self.index_change_lag = Histogram(
            "readmit_index_change_lag_seconds",
            "from a change's commit in another process (its host's clock) to its application to this process's index",
            ["pid"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.index_loads = Counter("readmit_index_loads", "index loads at start, by source", ["source"], registry=r)
        self.queue_depth = Gauge(
            "readmit_search_queue_depth", "searches waiting for a worker", registry=r, multiprocess_mode="liveall"
        )
        self.calibrations = Counter(
            "readmit_calibrations",
            "gallery calibration samples this process took, by source (drawn: leave-one-out searches run here; "
            "stored: read from the database, drawn by another process or an earlier start)",
            ["source"],
            registry=r,
        )
        self.search_claims = Counter(
            "readmit_search_claims",
            "searches this process claimed from the shared queue, by the lease they had (free, expired: taken over)",
            ["lease"],
            registry=r,
        )
        self.search_ends_discarded = Counter(
            "readmit_search_ends_discarded",
            "searches run here whose end was not written: lease taken over by another process, or ended elsewhere",
            ["reason"],
            registry=r,
        )
        self.search_leases_held = Gauge(
            "readmit_search_leases_held",
            "written searches this process holds (queued here or running)",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.peer_messages = Counter(
            "readmit_peer_messages",
            "signed messages exchanged with a peer node, by kind (search, poll, notification), direction (sent, "
            "received) and outcome (the answer's status, or the refusal's code)",
            ["peer", "kind", "direction", "outcome"],
            registry=r,
        )
        self.peer_latency = Histogram(
            "readmit_peer_message_seconds",
            "a message sent to a peer until its verified answer",
            ["peer", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.peer_failures = Counter(
            "readmit_peer_failures",
            "messages sent to a peer without a valid answer: unreachable, timeout, server_error, invalid_signature",
            ["peer", "kind", "reason"],
            registry=r,
        )
        self.deduplication_jobs = Counter(
            "readmit_deduplication_jobs", "deduplication jobs ended, by outcome", ["outcome"], registry=r
        )
        self.deduplication_seconds = Counter(
            "readmit_deduplication_seconds", "time the deduplication worker spent running jobs", registry=r
        )
        self.background_restarts = Counter(
            "readmit_background_process_restarts",
            "times the process of the background passes (audit sequencer, case linker) died and was started again",
            registry=r,
        )

        self.index_templates = Gauge(
            "readmit_index_templates",
            "templates in a gallery's matcher index",
            ["gallery", "kind"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.index_shards = Gauge(
            "readmit_index_shards",
            "shards of a gallery's index (1: in process)",
            ["gallery"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.index_shards_unavailable = Gauge(
            "readmit_index_shards_unavailable",
            "shards not answering or being restored: searches of the gallery fail with shard_unavailable",
            ["gallery"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.index_changes_behind = Gauge(
            "readmit_index_changes_behind",
            "changes committed to the gallery (as last read from the database) not yet applied to this process's index",
            ["gallery"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self._queue_depth: Callable[[], int] = lambda: 0
        self._leases_held: Callable[[], int] = lambda: 0
        self._index_sizes: Callable[[], list[IndexSize]] = list
        self._kinds: dict[int, str] = {}

    def watch_queue(self, depth: Callable[[], int], leases_held: Callable[[], int]) -> None:
        self._queue_depth = depth
        self._leases_held = leases_held

    def watch_indexes(self, sizes: Callable[[], list[IndexSize]]) -> None:
        """``sizes()`` describes every loaded index."""
        self._index_sizes = sizes

    def sample(self) -> None:
        """Set the gauges of live state from this process's parts. An index whose kind changed
        (a rebuild) reports 0 under its old kind: in multiprocess mode a label set cannot be
        removed from the other processes' view."""
        self.queue_depth.set(self._queue_depth())
        self.search_leases_held.set(self._leases_held())
        for size in self._index_sizes():
            gallery = str(size.gallery_id)
            old_kind = self._kinds.get(size.gallery_id)
            if old_kind is not None and old_kind != size.kind:
                self.index_templates.labels(gallery, old_kind).set(0)
            self._kinds[size.gallery_id] = size.kind
            self.index_templates.labels(gallery, size.kind).set(size.templates)
            self.index_shards.labels(gallery).set(size.shards)
            self.index_shards_unavailable.labels(gallery).set(size.unavailable_shards)
            self.index_changes_behind.labels(gallery).set(size.changes_behind)

    def exposition(self) -> bytes:
        """The text a scrape answers: this process's metrics, or every live process's in
        multiprocess mode."""
        self.sample()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        forget_dead_processes(directory)
        merged = CollectorRegistry()
        _LaidOutFiles(merged, str(directory))
        return generate_latest(merged)


FILE_HEADER_BYTES = 8
"""A metrics file's header (bytes used, then padding): a file shorter than this is being created."""


class _LaidOutFiles(multiprocess.MultiProcessCollector):
    """Every process's files, but those a starting process is creating at that moment: such a
    file is empty until its process sizes it, and reading it failed the whole scrape (a 500 in
    one scrape of about twenty while a passes child started). It holds nothing yet, and is read
    at the next scrape."""

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in Path(self._path).glob("*.db"):  # the folder given to the library's collector
            try:
                if path.stat().st_size >= FILE_HEADER_BYTES:
                    files.append(str(path))
            except FileNotFoundError:  # a dead process's, removed meanwhile
                continue
        return self.merge(files, accumulate=True)


def multiprocess_dir() -> Path | None:
    """Where the processes of one server write their metrics, if it runs several."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


_PER_PROCESS_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges of processes that died without stopping (killed; their supervisor
    started another), so that a scrape never shows a dead process's queue or lag."""
    for path in directory.glob("gauge_live*_*.db"):
        match = _PER_PROCESS_FILE.match(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not alive(pid):
            multiprocess.mark_process_dead(pid, str(directory))
