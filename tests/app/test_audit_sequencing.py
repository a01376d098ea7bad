"""Audit events are sequenced after commit: writers never wait on one another (no global lock),
whatever commits is chained exactly once, in a chain and a Merkle tree that verify, even with a
sequencer in each of two processes at once; and an event acknowledged and never sequenced
before a crash is sequenced by the next runtime."""

import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from app.audit import merkle, sequencing, tree
from app.audit import service as audit
from app.audit.actions import Action
from app.audit.canonical import canonical_bytes
from app.audit.log import CheckpointPolicy
from app.audit.models import AuditCheckpoint, AuditEvent, AuditEventCountry, AuditPending
from app.audit.notes import Signer
from app.audit.sequencer import Sequencer
from app.db.session import Sessions, make_session_factory, transaction
from app.observability.metrics import Metrics
from tests.conftest import POSTGRES_URL
from tests.harness import LOG_NAME, ServerProcess, Service, principal

LOCK_TIMEOUT_MS = 3000
"""A statement that waits this long on a lock fails: a writer that waited on another fails."""


class Officer:
    def __init__(self, country: str) -> None:
        self.id, self.role, self.country = 7, "registry", country


def another_process(url: str) -> Sessions:
    """Sessions on an engine of their own, as another service process has; every statement gives
    up after LOCK_TIMEOUT_MS waiting on a lock."""
    engine = create_engine(url, connect_args={"options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"}, pool_size=12)
    return make_session_factory(engine)


def append(sessions: Sessions, resources: list[str], country: str = "SEN", hold_s: float = 0) -> None:
    """One transaction appending one event per resource, kept open ``hold_s`` after the append."""
    with transaction(sessions) as session:
        audit.append_many(session, [audit.Event(Officer(country), Action.RECORD_READ, r, ("FRA",)) for r in resources])
        time.sleep(hold_s)


def resources(sessions: Sessions) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent.resource).order_by(AuditEvent.seq)))


def tree_hash(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 over the entries, from scratch."""
    if not entries:
        return merkle.EMPTY_ROOT
    if len(entries) == 1:
        return merkle.leaf_hash(entries[0])
    k = merkle.split(len(entries))
    return merkle.node_hash(tree_hash(entries[:k]), tree_hash(entries[k:]))


def assert_log_whole(sessions: Sessions) -> list[AuditEvent]:
    """Nothing pending, seqs 1..n, the chain verifies, the tree holds every event with the root a
    recomputation gives, each event's countries are indexed for its countries' auditors, and
    every checkpoint signed is of a tree size whose root is the recomputed one."""
    with sessions() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        assert session.scalar(select(func.count()).select_from(AuditPending)) == 0
        assert audit.verify_chain(session) == audit.Verification(True, len(events))
        head = tree.head(session)
        indexed = {
            (row.seq, row.country) for row in session.execute(select(AuditEventCountry.seq, AuditEventCountry.country))
        }
        checkpoints = [
            (row.size, row.root) for row in session.execute(select(AuditCheckpoint.size, AuditCheckpoint.root))
        ]
    leaves = [canonical_bytes(event) for event in events]
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert head.size == len(events) and head.root == tree_hash(leaves)
    assert indexed == {(e.seq, country) for e in events for country in e.details.get("countries", [])}
    for size, root in checkpoints:
        assert bytes.fromhex(root) == tree_hash(leaves[:size])
    return events


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.skipif(not POSTGRES_URL, reason="writers in parallel: PostgreSQL (SQLite has one writer)")
def test_a_writer_holding_its_transaction_open_blocks_no_other_writer_nor_the_sequencer(service, database_url):
    first, second = another_process(database_url), another_process(database_url)
    with transaction(first) as held:
        audit.append(held, Officer("SEN"), Action.RECORD_READ, "held/1", ("FRA",))
        append(second, ["quick/1"])  # fails after LOCK_TIMEOUT_MS if it waits on the held transaction
        sequencing.catch_up(second)  # neither does the sequencer wait on it
        assert resources(second)[-1] == "quick/1" and "held/1" not in resources(second)
    sequencing.catch_up(second)
    assert resources(second)[-2:] == ["quick/1", "held/1"]  # committed later, sequenced later
    assert_log_whole(second)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.skipif(not POSTGRES_URL, reason="writers in parallel: PostgreSQL (SQLite has one writer)")
def test_concurrent_appends_in_two_processes_each_sequencing_are_chained_once_in_a_log_that_verifies(
    service, database_url, caplog
):
    processes = [another_process(database_url), another_process(database_url)]
    signer = Signer.generate(LOG_NAME)
    sequencers = [
        Sequencer(
            sessions, sessions, signer, CheckpointPolicy(interval_s=0.05, events=20), 0.005, Metrics(), lambda: True
        )
        for sessions in processes  # both lead, as two would for a moment while the lead changes hands
    ]
    for sequencer in sequencers:
        sequencer.start()
    batches = {f"w{p}.{t}.{i}": p for p in range(2) for t in range(4) for i in range(15)}
    failures: list[BaseException] = []

    def writer(sessions: Sessions, prefix: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(15):  # batches of one to three events, held open a little: commits out of id order
                batch = [f"{prefix}.{i}/{k}" for k in range(rng.randint(1, 3))]
                append(sessions, batch, rng.choice(["SEN", "MLI"]), hold_s=rng.random() * 0.01)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [
        threading.Thread(target=writer, args=(processes[p], f"w{p}.{t}", 10 * p + t))
        for p in range(2)
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sequencer in sequencers:
        sequencer.stop()
    assert failures == []
    assert not [record for record in caplog.records if record.name == "app.audit.sequencer"]  # no pass failed
    sequencing.catch_up(processes[0])

    events = assert_log_whole(processes[1])
    appended = [e.resource for e in events if e.resource.startswith("w")]
    assert len(appended) == len(set(appended))  # each exactly once
    assert {r.rsplit("/", 1)[0] for r in appended} == set(batches)  # every batch committed is chained
    for name in batches:  # a batch's events keep their order
        members = [r for r in appended if r.rsplit("/", 1)[0] == name]
        assert members == sorted(members, key=lambda r: int(r.rsplit("/", 1)[1]))
    assert all(e.details["countries"] in (["FRA", "SEN"], ["FRA", "MLI"]) for e in events if e.resource[0] == "w")


def test_events_acknowledged_and_never_sequenced_are_sequenced_by_the_next_runtime(tmp_path, database_url):
    service = Service(tmp_path / "data", database_url, audit_sequence_interval_s=3600)
    try:
        sequencing.catch_up(service.runtime.sessions)
        append(service.runtime.sessions, [f"before-crash/{i}" for i in range(5)])  # acknowledged: committed
        with service.runtime.sessions() as session:
            assert session.scalar(select(func.count()).select_from(AuditPending)) == 5
        service.restart(graceful=False)  # a new runtime, with a new sequencer whose pass at start ...
        service.runtime.passes.sequencer.run_once()  # ... may or may not have run yet: this one has
        events = assert_log_whole(service.runtime.sessions)
        assert [e.resource for e in events][-5:] == [f"before-crash/{i}" for i in range(5)]
    finally:
        service.close()


def test_events_chained_while_the_tree_lagged_go_into_it_in_order(tmp_path, database_url):
    """A step takes the events it has just chained as the tree's next leaves, without reading
    them back; when the tree lagged behind the chain (events chained by an older version, or a
    step that stopped between the two), it reads the lagging ones first, and the log is whole."""
    service = Service(tmp_path / "data", database_url, audit_sequence_interval_s=3600)
    try:
        sequencing.catch_up(service.runtime.sessions)
        append(service.runtime.sessions, [f"chained-only/{i}" for i in range(3)])
        with transaction(service.runtime.sessions) as session:
            sequencing._chain_pending(session, sequencing.SEQUENCE_BATCH)  # chained, not in the tree
        append(service.runtime.sessions, [f"after/{i}" for i in range(4)])
        sequencing.catch_up(service.runtime.sessions)
        events = assert_log_whole(service.runtime.sessions)
        assert [e.resource for e in events][-7:] == [f"chained-only/{i}" for i in range(3)] + [
            f"after/{i}" for i in range(4)
        ]
    finally:
        service.close()


def test_an_auditor_reads_every_acknowledged_event_at_once_whatever_the_sequencer_interval(tmp_path, database_url):
    service = Service(tmp_path / "data", database_url, audit_sequence_interval_s=3600)
    try:
        auditor = service.principal("auditor")
        gallery = service.gallery("SEN")
        listed = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
        assert listed[-1]["action"] == "gallery.create" and listed[-1]["resource"] == f"gallery/{gallery}"
        proof = service.client.get(
            f"/v1/audit/proof/inclusion?seq={listed[-1]['seq']}&tree_size={listed[-1]['seq']}", headers=auditor
        )
        assert proof.status_code == 200, proof.text
        metrics = service.client.get("/metrics", headers=service.admin).text
        assert "readmit_audit_pending_events" in metrics
    finally:
        service.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.skipif(not POSTGRES_URL, reason="two nodes share PostgreSQL")
def test_two_nodes_appending_at_once_keep_one_log_that_verifies(tmp_path, database_url):
    """Two service nodes (real processes, each its own data folder, one key) on one database,
    each sequencing: principals created through both at once are all in one chain and tree
    that either node verifies, and that an outside verifier accepts whole."""
    key = {"READMIT_AUDIT_KEY_FILE": str(tmp_path / "audit-log.key")}
    first = ServerProcess(tmp_path / "a", database_url, **key)
    second = ServerProcess(tmp_path / "b", database_url, **key)
    try:
        nodes = [first, second] * 20

        def create(index: int) -> None:
            with httpx.Client(base_url=nodes[index].base, timeout=30) as client:
                principal(client, "registry", "SEN", admin=nodes[index].admin)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(len(nodes))))
        auditor = first.principal("auditor")
        for node in (second, first):
            verified = httpx.get(f"{node.base}/v1/audit/verify", headers=auditor, timeout=30).json()
            assert verified["ok"] is True, verified
        listed = httpx.get(f"{second.base}/v1/audit/events?limit=1000", headers=auditor, timeout=30).json()["events"]
        created = [e for e in listed if e["action"] == "principal.create" and e["role"] == "admin"]
        assert len(created) == len(nodes) + 1  # and the auditor
        assert [e["seq"] for e in listed] == list(range(1, len(listed) + 1))
        httpx.post(f"{second.base}/v1/audit/checkpoint", headers=auditor, timeout=30).raise_for_status()
        env = {**os.environ, "READMIT_API_KEY": auditor["Authorization"].removeprefix("Bearer ")}
        assert first.verifier_key is not None
        args = ["--url", first.base, "--key", first.verifier_key, "--state", str(tmp_path / "s.json"), "--whole-log"]
        run = subprocess.run(
            [sys.executable, "-m", "app", "audit", "verify-remote", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
    finally:
        first.stop()
        second.stop()


def test_a_sequencer_sequences_only_while_its_process_leads(tmp_path, database_url):
    """Of the processes of one database, only the leader's sequencer passes (app/db/locks.py
    ``Leadership``): the others would queue on the chain's head for nothing."""
    service = Service(tmp_path / "data", database_url, audit_sequence_interval_s=3600)
    leads = [False]
    sequencer = Sequencer(
        service.runtime.sessions,
        service.runtime.read_sessions,
        service.runtime.signer,
        CheckpointPolicy(interval_s=3600, events=1000),
        0.01,
        Metrics(),
        lambda: leads[0],
    )

    def pending() -> int:
        with service.runtime.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(AuditPending)) or 0)

    try:
        sequencing.catch_up(service.runtime.sessions)
        append(service.runtime.sessions, [f"waiting/{i}" for i in range(5)])
        sequencer.start()
        time.sleep(0.5)  # fifty intervals
        assert pending() == 5, "a process that does not lead leaves the events to the leader"
        leads[0] = True
        deadline = time.monotonic() + 10
        while pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pending() == 0, "once it leads, it sequences them"
    finally:
        sequencer.stop()
        service.close()
