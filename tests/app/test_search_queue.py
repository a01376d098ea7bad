"""One search queue for several processes on one PostgreSQL: a search held by a process that
stops renewing its lease (stalled, or killed) is claimed and run by another, once; claims follow
deadlines across processes; a caller polls its search through any process. SQLite stays single-
process: there the queue resumes after a restart (tests/app/test_scheduling.py, test_faults.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from tests.app.test_identification import DIM, identify, open_case, searchable_sen_gallery
from tests.harness import ServerProcess, Service, case_body, identification_body, settled

LEASE_S = 1.0
POLL_S = 0.1


@pytest.fixture
def postgres_url(database_url: str | None) -> str:
    if database_url is None:
        pytest.skip("several processes share a queue on PostgreSQL; SQLite serves one process")
    return database_url


def node(data_dir: Path, database_url: str, audit_key: Path | None = None, **overrides) -> Service:
    """A service process's runtime (in this test process) on the shared database, with short
    leases and no expiry pass but those a test runs; ``audit_key``: the first node's, as every
    node signs the one log."""
    if audit_key is not None:
        overrides["audit_key_file"] = audit_key
    overrides.setdefault("expiry_interval_s", 3600)
    overrides.setdefault("search_claim_poll_s", POLL_S)
    return Service(data_dir, database_url, search_lease_s=LEASE_S, **overrides)


@pytest.fixture
def first(tmp_path, postgres_url) -> Iterator[Service]:
    running = node(tmp_path / "a", postgres_url)
    yield running
    running.close()


def stall(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process stops renewing and claiming, as one stuck in a long pause, or cut off from
    the database: its leases lapse; its workers may still run a batch afterwards."""
    monkeypatch.setattr(service.runtime.claimer, "renew", lambda: None)
    monkeypatch.setattr(service.runtime.claimer, "claim", lambda: 0)


def searches_row(service: Service, search_id: int) -> dict:
    with service.runtime.engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, lease_owner FROM searches WHERE id = :id"), {"id": search_id}
        ).one()
    return dict(row._mapping)


def written_outcome(service: Service, search_id: int) -> tuple[list[int], int]:
    """The candidates' ranks stored for the search, and how many ``search.complete`` events."""
    with service.runtime.engine.connect() as connection:
        ranks = connection.execute(
            text("SELECT rank FROM candidates WHERE search_id = :id ORDER BY rank"), {"id": search_id}
        ).scalars()
        completions = connection.execute(  # chained, or committed and not yet chained: one snapshot
            text(
                "SELECT (SELECT count(*) FROM audit_events WHERE action = 'search.complete' AND resource LIKE :r)"
                " + (SELECT count(*) FROM audit_pending WHERE action = 'search.complete' AND resource LIKE :r)"
            ),
            {"r": f"%/search/{search_id}"},
        ).scalar_one()
    return list(ranks), completions


def wait_until(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("ends_first", ["taker", "stalled"])
def test_a_search_whose_lease_lapses_is_run_by_another_process_and_ended_once(
    first, tmp_path, postgres_url, people, monkeypatch, ends_first
):
    """A holds a queued search and stalls; B claims it once the lease lapses. Whichever of the
    two ends its batch first, the search is ended once: the other's result is discarded."""
    _, police = searchable_sen_gallery(first, people)
    first.runtime.scheduler.pause()
    case = open_case(first, police)
    response = identify(first, police, case["id"], people.mated_probes[3], wait_ms=0)
    assert response.status_code == 202
    search_id = response.json()["id"]
    second = node(tmp_path / "b", postgres_url, first.settings.audit_key_path)
    try:
        second.runtime.scheduler.pause()
        time.sleep(3 * LEASE_S)  # A's heartbeat keeps its lease: B may not take the search
        assert searches_row(first, search_id) == {"status": "queued", "lease_owner": first.runtime.claimer.leases.owner}

        stall(first, monkeypatch)
        wait_until(lambda: searches_row(first, search_id)["lease_owner"] == second.runtime.claimer.leases.owner)
        runs_first, runs_last = (second, first) if ends_first == "taker" else (first, second)
        batches = runs_first.runtime.scheduler.batches_run
        runs_first.runtime.scheduler.resume()
        wait_until(lambda: runs_first.runtime.scheduler.batches_run > batches)
        batches = runs_last.runtime.scheduler.batches_run
        runs_last.runtime.scheduler.resume()
        wait_until(lambda: runs_last.runtime.scheduler.batches_run > batches)

        result = settled(first.client, police, search_id)  # polled through A: B ran it
        assert result["status"] == "done"
        assert result["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[3]):04d}"
        ranks, completions = written_outcome(first, search_id)
        assert ranks == list(range(1, len(result["candidates"]) + 1)), "one set of candidates"
        assert completions == 1
        discarded = first.runtime.metrics.search_ends_discarded
        reason = "ended_elsewhere" if ends_first == "taker" else "taken_over"
        assert discarded.labels(reason)._value.get() == 1, "A ran it, and wrote nothing"
        assert second.runtime.metrics.search_claims.labels("expired")._value.get() == 1
    finally:
        second.close()


def test_claims_follow_deadlines_across_processes(tmp_path, postgres_url, people):
    """Six searches handed back to the queue by a process that stops; two processes, woken by its
    notification (they do not poll), each with room for two (one worker, batches of two), claim
    the four earliest deadlines between them, and each runs its share earliest deadline first;
    the rest are claimed as room frees up, and every search runs once."""
    first = node(tmp_path / "a", postgres_url)
    _, police = searchable_sen_gallery(first, people)
    first.runtime.scheduler.pause()
    limits = [40, 10, 25, 5, 30, 15]
    ids = {}
    for days in limits:
        case = open_case(first, police, ref=f"EDF-{days}", days_ago=0, limit=days)
        response = identify(first, police, case["id"], people.mated_probes[0], wait_ms=0)
        ids[days] = response.json()["id"]
    key = first.settings.audit_key_path
    overrides = {"search_workers": 1, "max_batch_searches": 2, "search_claim_poll_s": 3600}  # woken, not polling
    nodes = [node(tmp_path / name, postgres_url, key, **overrides) for name in ("b", "c")]
    try:
        for other in nodes:
            other.runtime.scheduler.pause()
        first.close()  # hands its searches back, and notifies
        first = None
        owners = {other.runtime.claimer.leases.owner for other in nodes}

        def claimed() -> dict[int, str]:
            rows = {days: searches_row(nodes[0], search_id)["lease_owner"] for days, search_id in ids.items()}
            return {days: owner for days, owner in rows.items() if owner is not None}

        wait_until(lambda: len(claimed()) == 4)
        time.sleep(5 * POLL_S)  # no further claim: neither has room
        held = claimed()
        assert sorted(held) == [5, 10, 15, 25], "the four earliest deadlines"
        assert set(held.values()) == owners and all(list(held.values()).count(owner) == 2 for owner in owners), (
            "two each"
        )

        for other in nodes:
            other.runtime.scheduler.max_batch = 1  # one search per batch, to observe each one's order
            other.runtime.scheduler.resume()
        results = {days: settled(nodes[0].client, police, search_id) for days, search_id in ids.items()}
        assert {r["status"] for r in results.values()} == {"done"}
        for owner in owners:
            mine = sorted((days for days in held if held[days] == owner), key=lambda d: results[d]["started_at"])
            assert mine == sorted(mine), "each process ran its share earliest deadline first"
        for days, search_id in ids.items():
            ranks, completions = written_outcome(nodes[0], search_id)
            assert completions == 1 and ranks == list(range(1, len(results[days]["candidates"]) + 1))
    finally:
        for other in [*nodes, *([first] if first is not None else [])]:
            other.close()


def test_expiry_leaves_a_search_another_live_process_holds(first, tmp_path, postgres_url, people):
    _, police = searchable_sen_gallery(first, people)
    first.runtime.scheduler.pause()
    case = open_case(first, police, days_ago=1, limit=2)
    search_id = identify(first, police, case["id"], people.mated_probes[0], wait_ms=0).json()["id"]
    with first.runtime.engine.begin() as connection:  # its deadline passes while A holds it
        connection.execute(
            text("UPDATE searches SET deadline = :past WHERE id = :id"),
            {"past": datetime.now(UTC) - timedelta(seconds=1), "id": search_id},
        )
    second = node(tmp_path / "b", postgres_url, first.settings.audit_key_path)
    try:
        second.runtime.expire_due()
        assert searches_row(first, search_id)["status"] == "queued", "A holds it: B's expiry pass leaves it"
        first.runtime.expire_due()
        assert searches_row(first, search_id) == {"status": "expired", "lease_owner": None}
    finally:
        second.close()


def test_a_search_queued_on_a_killed_process_is_completed_by_another(tmp_path, postgres_url):
    """Two real service processes on one PostgreSQL. A accepts a search but has no worker to
    run it; A is killed (SIGKILL); B claims the search once A's lease lapses and completes it,
    once. The caller polls it through B."""
    shared = {
        "READMIT_SEARCH_LEASE_S": "2",
        "READMIT_SEARCH_CLAIM_POLL_S": "0.2",
        "READMIT_AUDIT_KEY_FILE": str(tmp_path / "audit-log.key"),  # one log, one key
    }
    first = ServerProcess(tmp_path / "a", postgres_url, READMIT_SEARCH_WORKERS="0", **shared)
    second = None
    people = np.random.default_rng(4).standard_normal((50, DIM)).astype(np.float32)
    try:
        with httpx.Client(base_url=first.base, timeout=10) as client:
            police = first.principal("border_police", "FRA", "FRA-X")
            gallery = client.post(
                "/v1/galleries",
                headers=first.admin,
                json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": DIM}},
            ).json()["id"]
            client.post(
                "/v1/agreements",
                headers=first.admin,
                json={
                    "receiving_country": "FRA",
                    "origin_country": "SEN",
                    "modalities": ["face"],
                    "valid_from": "2020-01-01",
                },
            )
            registry = first.principal("registry", "SEN")
            records = [{"reference_id": f"P{i:03d}", "templates": [people[i].tolist()]} for i in range(len(people))]
            assert client.post(
                f"/v1/galleries/{gallery}/records:batch", headers=registry, json={"records": records}
            ).is_success
            case = client.post("/v1/cases", headers=police, json=case_body("KILLED")).json()["id"]
            response = client.post(
                f"/v1/cases/{case}/identifications",
                headers=police,
                json=identification_body(people[7], model="m", wait_ms=0),
            )
            assert response.status_code == 202
            search_id = response.json()["id"]
        second = ServerProcess(tmp_path / "b", postgres_url, **shared)
        first.kill()
        with httpx.Client(base_url=second.base, headers=police, timeout=10) as client:
            deadline = time.monotonic() + 30
            while (result := client.get(f"/v1/searches/{search_id}").json())["status"] == "queued":
                assert time.monotonic() < deadline, "never claimed"
                time.sleep(0.1)
        assert result["status"] == "done" and result["candidates"][0]["reference_id"] == "P007"
        engine = create_engine(postgres_url)
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT count(*) FROM candidates WHERE search_id = :id"), {"id": search_id}
            ).scalar_one()
        engine.dispose()
        assert stored == len(result["candidates"]), "one set of candidates"
    finally:
        first.stop()
        if second is not None:
            second.stop()
