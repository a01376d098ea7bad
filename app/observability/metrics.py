"""Prometheus metrics of one service instance, in its own registry (so that several apps in one
process, as in tests, never collide)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLACK_BUCKETS = (0, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400, 540 * 86400)


@dataclass(frozen=True)
class IndexSize:
    gallery_id: int
    kind: str
    templates: int
    shards: int
    unavailable_shards: int


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "readmit_enrolled_records", "records inserted or updated", ["gallery", "change"], registry=r
        )
        self.index_loads = Counter("readmit_index_loads", "index loads at start, by source", ["source"], registry=r)
        self.queue_depth = Gauge("readmit_search_queue_depth", "searches waiting for a worker", registry=r)
        self.audit_sequencing_delay = Histogram(
            "readmit_audit_sequencing_delay_seconds",
            "from an audit event's append to its leaf in the Merkle tree",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_tree_size = Gauge("readmit_audit_tree_size", "audit events in the Merkle tree", registry=r)
        self.audit_checkpoints = Counter("readmit_audit_checkpoints", "checkpoints signed", registry=r)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def watch_indexes(self, sizes: Callable[[], list[IndexSize]]) -> None:
        """``sizes()`` describes every loaded index."""
        self.registry.register(_IndexSizes(sizes))


class _IndexSizes(Collector):
    def __init__(self, sizes: Callable[[], list[IndexSize]]) -> None:
        self.sizes = sizes

    def collect(self):  # type: ignore[no-untyped-def]
        templates = GaugeMetricFamily(
            "readmit_index_templates", "templates in a gallery's matcher index", labels=["gallery", "kind"]
        )
        shards = GaugeMetricFamily(
            "readmit_index_shards", "shards of a gallery's index (1: in process)", labels=["gallery"]
        )
        down = GaugeMetricFamily(
            "readmit_index_shards_unavailable",
            "shards not answering or being restored: searches of the gallery fail with shard_unavailable",
            labels=["gallery"],
        )
        for size in self.sizes():
            templates.add_metric([str(size.gallery_id), size.kind], size.templates)
            shards.add_metric([str(size.gallery_id)], size.shards)
            down.add_metric([str(size.gallery_id)], size.unavailable_shards)
        yield templates
        yield shards
        yield down
