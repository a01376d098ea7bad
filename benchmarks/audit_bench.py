"""The verifiable audit log's costs, measured in one run on one database:

- append latency of one event in its own transaction (commit included): touching no country, with
  no sequencer running; touching two countries, as the service's events do; the same with the
  sequencer running beside it at its default interval;
- the sequencing delay of those events (append to chained and in the tree, as the service's
  metric observes it);
- appends per second from ``--writers`` threads whose transactions each stay open ``--hold-ms``
  after the append (the rest of the change's work): as the service appends now (into the
  pending table, no shared lock), and with the chain's head locked for the whole transaction,
  as every append did before events were sequenced after commit (the baseline, in the same run);
- checkpoint signing: Ed25519 signed notes per second, and whole on-demand checkpoints
  (sequence, sign, store) per second;
- the sequencer's catch-up rate on a backlog of ``--tree-events`` (as after an upgrade), and an
  inclusion and a consistency proof read from the stored subtrees of that tree.

    python benchmarks/audit_bench.py --events 5000 --tree-events 200000
    python benchmarks/audit_bench.py --events 5000 --postgres-url postgresql+psycopg://u:p@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentiles_ms, print_json, print_table, scratch_database, scratch_folder, timed
from sqlalchemy import select

from app.audit import log as audit_log
from app.audit import service as audit
from app.audit.actions import Action
from app.audit.models import AuditHead
from app.audit.notes import Checkpoint, Signer
from app.audit.sequencer import Sequencer
from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.db.session import Sessions, make_engine, make_session_factory, transaction
from app.observability.metrics import Metrics


def append_latencies(sessions: Sessions, count: int, countries: tuple[str, ...]) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        with transaction(sessions) as session:
            audit.append(
                session, None, Action.SEARCH_COMPLETE, f"case/{i}/search/{i}", countries, details={"candidates": 3}
            )
        latencies.append(time.perf_counter() - started)
    return latencies


def concurrent_appends_per_s(sessions: Sessions, writers: int, each: int, hold_s: float, lock_head: bool) -> float:
    """Appends per second from ``writers`` threads, each transaction open ``hold_s`` after its
    append; with ``lock_head`` each first locks the chain's head, as appends did before."""

    def write(writer: int) -> None:
        for i in range(each):
            with transaction(sessions) as session:
                if lock_head:
                    session.execute(select(AuditHead.seq).where(AuditHead.id == 1).with_for_update())
                audit.append(session, None, Action.SEARCH_COMPLETE, f"case/{writer}/search/{i}", ("FRA", "SEN"))
                time.sleep(hold_s)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return writers * each / (time.perf_counter() - started)


def grow(sessions: Sessions, count: int, batch: int = 10_000) -> None:
    """``count`` more events through the real append, many to a transaction (fast to build)."""
    for start in range(0, count, batch):
        with transaction(sessions) as session:
            for i in range(start, min(count, start + batch)):
                audit.append(session, None, Action.SEARCH_READ, f"case/{i}/search/{i}", ("FRA", "SEN"))


def rate(action: Callable[[], object], seconds: float = 2.0) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        action()
        done += 1
    return done / (time.perf_counter() - started)


def measure(settings: Settings, events: int, tree_events: int, writers: int, hold_s: float) -> dict[str, object]:
    engine = make_engine(settings.sqlalchemy_url)
    upgrade_to_head(settings, engine)
    sessions = make_session_factory(engine)
    signer = Signer.generate("readmit.bench/audit")
    policy = audit_log.CheckpointPolicy(settings.audit_checkpoint_interval_s, settings.audit_checkpoint_events)
    read_engine = make_engine(settings.sqlalchemy_url, read_only=True)
    read_sessions = make_session_factory(read_engine)
    sequencer = Sequencer(
        sessions, read_sessions, signer, policy, settings.audit_sequence_interval_s, Metrics(), lambda: True
    )
    figures: dict[str, object] = {}

    figures["append_chain_only"] = percentiles_ms(append_latencies(sessions, events, ()))
    sequencer.run_once()
    figures["append_with_countries"] = percentiles_ms(append_latencies(sessions, events, ("FRA", "SEN")))
    sequencer.run_once()

    delays: list[float] = []
    stop = threading.Event()

    def sequence_beside() -> None:  # the service's sequencer loop, keeping what it observes
        while not stop.wait(settings.audit_sequence_interval_s):
            delays.extend(sequencer.run_once().delays_s)

    beside = threading.Thread(target=sequence_beside)
    beside.start()
    figures["append_with_countries_and_sequencer"] = percentiles_ms(append_latencies(sessions, events, ("FRA", "SEN")))
    stop.set()
    beside.join()
    delays.extend(sequencer.run_once().delays_s)
    figures["sequencing_delay"] = {**percentiles_ms(delays), "max_ms": max(delays) * 1000, "events": len(delays)}
    each = max(1, events // (4 * writers))
    figures["concurrent_appends_per_s"] = {
        "head_locked_as_before": concurrent_appends_per_s(sessions, writers, each, hold_s, lock_head=True),
        "now": concurrent_appends_per_s(sessions, writers, each, hold_s, lock_head=False),
        "writers": writers,
        "hold_ms": hold_s * 1000,
    }
    sequencer.run_once()

    checkpoint = Checkpoint(signer.name, 123456, bytes(32), datetime.now(UTC))
    figures["signed_notes_per_s"] = rate(lambda: signer.sign(checkpoint.text()))

    def one_event_then_checkpoint() -> None:
        append_latencies(sessions, 1, ("SEN",))
        sequencer.checkpoint_now()

    figures["on_demand_checkpoints_per_s"] = rate(one_event_then_checkpoint)
    grow(sessions, tree_events)
    started = time.perf_counter()
    size = sequencer.run_once().size
    figures["sequencer_catch_up_events_per_s"] = tree_events / (time.perf_counter() - started)
    figures["tree_size"] = size
    figures["inclusion_proof_ms"] = percentiles_ms(
        [timed(lambda i=i: audit_log.inclusion(sessions, _Operator(), 1 + i * 7 % size, size))[0] for i in range(200)]
    )
    figures["consistency_proof_ms"] = percentiles_ms(
        [timed(lambda i=i: audit_log.consistency(sessions, 1 + i * 13 % size, size))[0] for i in range(200)]
    )
    engine.dispose()
    read_engine.dispose()
    return figures


class _Operator:
    """The operator's auditor: no country, sees every event."""

    id, role, country = 0, "auditor", None


def report(name: str, figures: dict[str, object]) -> None:
    def ms(key: str) -> str:
        value = figures[key]
        assert isinstance(value, dict)
        return f"p50 {value['p50_ms']:.3f} ms, p99 {value['p99_ms']:.3f} ms"

    concurrent = figures["concurrent_appends_per_s"]
    assert isinstance(concurrent, dict)

    print_table(
        f"audit log on {name}",
        [
            ("append, no country touched", ms("append_chain_only")),
            ("append, with countries", ms("append_with_countries")),
            ("append, with countries, sequencer beside", ms("append_with_countries_and_sequencer")),
            ("sequencing delay", ms("sequencing_delay") + f", max {figures['sequencing_delay']['max_ms']:.1f} ms"),  # type: ignore[index]
            (
                f"appends/s, {concurrent['writers']} writers, {concurrent['hold_ms']:.0f} ms each, head locked (old)",
                f"{concurrent['head_locked_as_before']:.0f} /s",
            ),
            ("the same, appended as now (no shared lock)", f"{concurrent['now']:.0f} /s"),
            ("sequencer catch-up on the backlog", f"{figures['sequencer_catch_up_events_per_s']:.0f} events/s"),
            ("checkpoint signatures (Ed25519 note)", f"{figures['signed_notes_per_s']:.0f} /s"),
            (
                "on-demand checkpoints (append, sequence, sign, store)",
                f"{figures['on_demand_checkpoints_per_s']:.0f} /s",
            ),
            (f"inclusion proof at {figures['tree_size']} events", ms("inclusion_proof_ms")),
            (f"consistency proof at {figures['tree_size']} events", ms("consistency_proof_ms")),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="events appended in each of the three phases")
    parser.add_argument("--tree-events", type=int, default=200_000, help="backlog sequenced at once, then proved")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers for appends/s")
    parser.add_argument("--hold-ms", type=float, default=2.0, help="each writer's transaction open after its append")
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    results = {}
    concurrency = (args.writers, args.hold_ms / 1000)
    with scratch_folder() as folder:
        results["sqlite"] = measure(Settings(data_dir=Path(folder)), args.events, args.tree_events, *concurrency)
        report("SQLite", results["sqlite"])
    if args.postgres_url:
        with scratch_database(args.postgres_url) as url:
            results["postgresql"] = measure(
                Settings(data_dir=Path(tempfile.mkdtemp()), database_url=url),
                args.events,
                args.tree_events,
                *concurrency,
            )
            report("PostgreSQL", results["postgresql"])
    print_json(results)


if __name__ == "__main__":
    main()
