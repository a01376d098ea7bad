"""Searches run earliest deadline first, coalesce into batches, expire rather than run late,
and survive a restart."""

import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import text

from tests.app.test_identification import identify, open_case, searchable_sen_gallery
from tests.harness import settled


@pytest.fixture
def service(tmp_path, database_url):
    """One worker, so that the order in which searches start is the order of the queue."""
    from tests.harness import Service

    running = Service(tmp_path / "data", database_url, search_workers=1)
    yield running
    running.close()


@pytest.fixture
def paused(service, people):
    _, police = searchable_sen_gallery(service, people)
    service.runtime.scheduler.pause()
    return service, police


def test_queued_searches_run_earliest_deadline_first_and_coalesce(paused, people):
    service, police = paused
    # three cases, opened in the order latest deadline first
    cases = [open_case(service, police, ref=f"C{days}", days_ago=0, limit=days) for days in (40, 10, 25)]
    searches = []
    for case in cases:
        response = identify(service, police, case["id"], people.mated_probes[0], wait_ms=0)
        assert response.status_code == 202 and response.json()["status"] == "queued"
        searches.append(response.json()["id"])
    assert service.runtime.scheduler.depth == 3
    service.runtime.scheduler.max_batch = 1  # one search per batch, to observe the order
    service.runtime.scheduler.resume()
    for search_id in searches:
        assert settled(service.client, police, search_id)["status"] == "done"
    with service.runtime.engine.connect() as connection:
        started = dict(connection.execute(text("SELECT id, started_at FROM searches")).all())
    assert sorted(searches, key=lambda s: started[s]) == [searches[1], searches[2], searches[0]]  # 10, 25, 40 days


def test_concurrent_searches_for_one_gallery_share_a_matcher_call(paused, people):
    service, police = paused
    case = open_case(service, police)
    ids = [identify(service, police, case["id"], people.mated_probes[i], wait_ms=0).json()["id"] for i in range(6)]
    service.runtime.scheduler.resume()
    polled = [settled(service.client, police, i) for i in ids]
    assert all(p["status"] == "done" for p in polled)
    assert list(service.runtime.executor.batch_sizes) == [6], "six queued searches, one matcher call"
    for i, result in enumerate(polled):
        assert result["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[i]):04d}"


def test_a_search_whose_deadline_passes_while_queued_expires_unrun(paused, people, monkeypatch):
    service, police = paused
    case = open_case(service, police, days_ago=1, limit=2)
    search_id = identify(service, police, case["id"], people.mated_probes[0], wait_ms=0).json()["id"]
    # the workers' clock moves past the case's deadline while the search waits in the queue
    later = datetime.fromisoformat(case["deadline"]) + timedelta(seconds=1)
    monkeypatch.setattr("app.matching.executor.utcnow", lambda: later)
    service.runtime.scheduler.resume()
    result = settled(service.client, police, search_id)
    assert result["status"] == "expired" and result["started_at"] is None and result["candidates"] == []


def test_pending_searches_survive_a_restart(paused, people):
    service, police = paused
    case = open_case(service, police)
    search_id = identify(service, police, case["id"], people.mated_probes[2], wait_ms=0).json()["id"]
    service.restart(graceful=False)
    result = settled(service.client, police, search_id)
    assert result["status"] == "done"
    assert result["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[2]):04d}"
    assert np.isfinite(result["candidates"][0]["score"])


def test_callers_waiting_on_a_held_queue_leave_the_service_answering(paused, people):
    """Fifty callers wait for their searches (more than the thread pool's forty threads) while
    the workers are held: their waits hold no thread, so other requests are still answered."""
    service, police = paused
    case = open_case(service, police)
    answers: list[int] = []
    callers = [
        threading.Thread(
            target=lambda: answers.append(
                identify(service, police, case["id"], people.mated_probes[0], wait_ms=30_000).status_code
            )
        )
        for _ in range(50)
    ]
    for caller in callers:
        caller.start()
    for _ in range(500):
        if service.runtime.scheduler.depth == 50:
            break
        time.sleep(0.02)
    assert service.runtime.scheduler.depth == 50, "every caller's search is queued, and each caller waits"
    read: list[int] = []
    reader = threading.Thread(
        target=lambda: read.append(service.client.get(f"/v1/cases/{case['id']}", headers=police).status_code)
    )
    reader.start()
    reader.join(20)
    assert read == [200], "a case read answered while fifty identifications wait"
    assert service.runtime.scheduler.depth == 50, "still held: the read did not wait for the queue"
    service.runtime.scheduler.resume()
    for caller in callers:
        caller.join(30)
    assert answers == [200] * 50


def test_searches_waiting_for_one_batch_are_written_by_it_each_with_its_own_row_and_events(paused, people):
    """Callers still waiting when their batch ends are written by the batch, all in one insert:
    each gets its own id, its candidates and its two audit events, and the chain verifies."""
    service, police = paused
    case = open_case(service, police)
    answers: dict[int, dict] = {}

    def waiting_caller(number: int) -> None:
        response = identify(service, police, case["id"], people.mated_probes[number], wait_ms=30_000)
        answers[number] = response.json()

    callers = [threading.Thread(target=waiting_caller, args=(number,)) for number in range(4)]
    for caller in callers:
        caller.start()
    give_up = time.monotonic() + 10
    while service.runtime.scheduler.depth < 4 and time.monotonic() < give_up:
        time.sleep(0.01)
    service.runtime.scheduler.resume()
    for caller in callers:
        caller.join(timeout=30)
    assert list(service.runtime.executor.batch_sizes) == [4], "four waiting searches, one batch"
    assert sorted(answers) == [0, 1, 2, 3] and all(answer["status"] == "done" for answer in answers.values())
    for number, answer in answers.items():
        assert answer["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[number]):04d}"
        assert settled(service.client, police, answer["id"])["candidates"] == answer["candidates"]
    ids = [answer["id"] for answer in answers.values()]
    assert len(set(ids)) == 4
    auditor = service.principal("auditor", None)
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    for search_id in ids:
        resource = f"case/{case['id']}/search/{search_id}"
        assert [e["action"] for e in events if e["resource"] == resource][:2] == ["search.submit", "search.complete"]
    assert service.client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True
