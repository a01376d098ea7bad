"""Two service instances on one database, each with its own data folder (as two nodes): what one
commits, the other applies within the follower's bounded delay, and finds by its next search; a
start catches a snapshot up from the change log. On PostgreSQL the follower is woken by NOTIFY, on SQLite it polls."""

import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from app.db.notify import GALLERY_CHANGES, Listener, notify
from tests.harness import ServerProcess, Service, case_body, identification_body, records

AGREEMENT = {"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"}


def applied_everywhere(*services: Service, timeout_s: float = 10) -> None:
    """Wait until every service's follower has applied every committed change (read from the
    database), as a client retrying for the bounded delay would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_current(service) for service in services):
            return
        time.sleep(0.02)
    raise AssertionError("a follower did not catch up")


def _current(service: Service) -> bool:
    registry = service.runtime.registry
    seqs = registry.feed.seqs()
    return all(registry.is_loaded(g) and not registry.is_behind(g, seq) for g, seq in seqs.items())


def found_through(service: Service, police: dict[str, str], probe, ref: str) -> list[str]:
    """The reference ids an identification through ``service`` answers for ``probe``."""
    case = service.client.post("/v1/cases", headers=police, json=case_body(ref, countries=("SEN",)))
    assert case.status_code == 201, case.text
    response = service.client.post(
        f"/v1/cases/{case.json()['id']}/identifications", headers=police, json=identification_body(probe)
    )
    assert response.status_code == 200, response.text
    return [candidate["reference_id"] for candidate in response.json()["candidates"]]


def test_what_one_node_commits_the_other_finds(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")  # created through A: B opens its index
    a.client.post("/v1/agreements", headers=a.admin, json=AGREEMENT)
    registry = a.principal("registry", "SEN")
    police = a.principal("border_police", "FRA", "FRA-DCPAF")
    batch = records(30)
    enrolled = a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    assert enrolled.json()["inserted"] == 30
    applied_everywhere(b)
    assert found_through(b, police, batch[7]["templates"][0], "C-1")[0] == "REF-00007"

    deleted = a.client.delete(f"/v1/galleries/{gallery}/records/REF-00007", headers=registry)
    assert deleted.status_code == 204
    replaced = {**batch[9], "templates": records(1, seed=5)[0]["templates"]}
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": [replaced]}, headers=registry)
    applied_everywhere(b)
    assert "REF-00007" not in found_through(b, police, batch[7]["templates"][0], "C-2")
    assert "REF-00009" not in found_through(b, police, batch[9]["templates"][0], "C-3")
    assert found_through(b, police, replaced["templates"][1], "C-4")[0] == "REF-00009"

    metrics = b.client.get("/metrics", headers=b.admin).text
    assert f'readmit_index_changes_behind{{gallery="{gallery}"}} 0.0' in metrics
    (lagged,) = [line for line in metrics.splitlines() if line.startswith("readmit_index_change_lag_seconds_count")]
    assert float(lagged.split()[1]) >= 2, "the deletion and the replacement came to B through the log"
    assert f'pid="{os.getpid()}"' in lagged, "each process its own series (B runs in this one)"


def test_a_search_sees_what_another_node_committed_before_it_without_waiting_for_the_follower(nodes):
    """The border police's search through B just after the registry's enrolment through A: no
    silent "no candidate" while B's follower has not applied the change yet."""
    a, b = nodes
    b.runtime.follower.stop()  # no pass of B's follower applies A's changes from here on
    gallery = a.gallery("SEN")  # created through A after: the search opens its index on B
    a.client.post("/v1/agreements", headers=a.admin, json=AGREEMENT)
    registry = a.principal("registry", "SEN")
    police = a.principal("border_police", "FRA", "FRA-DCPAF")
    batch = records(30)
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    assert found_through(b, police, batch[7]["templates"][0], "C-1")[0] == "REF-00007"

    a.client.delete(f"/v1/galleries/{gallery}/records/REF-00007", headers=registry)
    assert "REF-00007" not in found_through(b, police, batch[7]["templates"][0], "C-2")


def test_a_verification_scores_the_record_another_node_enrolled_a_moment_before(nodes):
    a, b = nodes
    b.runtime.follower.stop()
    gallery = a.gallery("SEN")
    a.client.post("/v1/agreements", headers=a.admin, json=AGREEMENT)
    registry = a.principal("registry", "SEN")
    police = a.principal("border_police", "FRA", "FRA-DCPAF")
    batch = records(5)
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    case = b.client.post("/v1/cases", headers=police, json=case_body("C-1", countries=("SEN",))).json()
    found_through(b, police, batch[0]["templates"][0], "C-0")  # B opens the gallery
    late = records(1, seed=9, prefix="LATE")
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": late}, headers=registry)
    verified = b.client.post(
        f"/v1/cases/{case['id']}/verifications",
        headers=police,
        json={"gallery_id": gallery, "reference_id": "LATE-00000", "probes": [late[0]["templates"][0]]},
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["decision"] == "match"


def test_a_batch_waiting_for_a_gallery_held_here_leaves_the_matcher_to_the_others(nodes):
    """B's SEN index is behind and held (as while a snapshot of it is saved): the SEN search
    waits for it, but gives the matcher back first, so that an ESP search is answered meanwhile."""
    a, b = nodes
    b.runtime.follower.stop()
    police = a.principal("border_police", "FRA", "FRA-DCPAF")
    galleries, people = {}, {}
    for country in ("SEN", "ESP"):
        galleries[country] = a.gallery(country)
        a.client.post("/v1/agreements", headers=a.admin, json={**AGREEMENT, "origin_country": country})
        people[country] = records(5, seed=len(galleries), prefix=country)
        registry = a.principal("registry", country)
        enrolled = a.client.post(
            f"/v1/galleries/{galleries[country]}/records:batch", json={"records": people[country]}, headers=registry
        )
        assert enrolled.status_code == 200, enrolled.text
    cases = {
        country: b.client.post("/v1/cases", headers=police, json=case_body(f"C-{country}", countries=(country,))).json()
        for country in ("SEN", "ESP")
    }

    def identify(country: str, person: int) -> httpx.Response:
        probe = identification_body(people[country][person]["templates"][0], wait_ms=30_000)
        return b.client.post(f"/v1/cases/{cases[country]['id']}/identifications", headers=police, json=probe)

    assert identify("SEN", 0).status_code == identify("ESP", 0).status_code == 200  # B opens both
    late = records(1, seed=9, prefix="SEN-LATE")
    registry = a.principal("registry", "SEN")
    a.client.post(f"/v1/galleries/{galleries['SEN']}/records:batch", json={"records": late}, headers=registry)
    people["SEN"].append(late[0])
    sen_answer: list[httpx.Response] = []
    executor = b.runtime.executor
    slot_held_at_match: list[bool] = []
    real_match = executor.match

    def match(jobs):  # the process has one matching slot: a batch matches only holding it
        slot_held_at_match.append(b.runtime.scheduler._matching._value == 0)
        return real_match(jobs)

    executor.match = match
    with b.runtime.registry.writing(galleries["SEN"]):
        waiting = threading.Thread(target=lambda: sen_answer.append(identify("SEN", 5)))
        waiting.start()
        deadline = time.monotonic() + 10
        while not (executor._awaited and not executor._accepted):  # its batch has taken it, and waits
            assert time.monotonic() < deadline
            time.sleep(0.01)
        esp = identify("ESP", 1)  # answered while the SEN batch still waits
        assert esp.status_code == 200 and esp.json()["candidates"][0]["reference_id"] == "ESP-00001"
        assert not sen_answer, "the SEN search waited for its gallery"
    waiting.join(timeout=30)
    assert sen_answer[0].json()["candidates"][0]["reference_id"] == "SEN-LATE-00000"
    assert slot_held_at_match and all(slot_held_at_match), "the waiting batch took its turn back to match"


def test_a_writer_catches_up_on_the_other_nodes_changes_before_its_own(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")
    registry = a.principal("registry", "SEN")
    applied_everywhere(b)
    b.runtime.follower.stop()  # B learns of A's change only from its own next write
    first, second = records(10, seed=1, prefix="A"), records(10, seed=2, prefix="B")
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": first}, headers=registry)
    b.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": second}, headers=registry)
    assert b.runtime.registry.get(gallery).template_count == 40, "A's 10 records, then B's own"
    unchanged = b.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": first}, headers=registry)
    assert unchanged.json()["unchanged"] == 10


def test_a_node_started_with_an_old_snapshot_catches_up_from_the_log(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")
    registry = a.principal("registry", "SEN")
    batch = records(20)
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch[:10]}, headers=registry)
    applied_everywhere(b)
    b.close()  # graceful: B's snapshot holds change 1
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch[10:]}, headers=registry)
    a.client.delete(f"/v1/galleries/{gallery}/records/REF-00002", headers=registry)
    b.reopen()
    assert b.runtime.ready
    (event,) = b.runtime.registry.load_events
    assert event == {
        "gallery_id": gallery,
        "source": "caught up: changes 2 to 3 from the log",
        "templates": 38,
        "kind": "exact",
    }
    assert set(b.runtime.registry.get(gallery).record_ids().tolist()) == set(
        a.runtime.registry.get(gallery).record_ids().tolist()
    )


def identified_through(server: ServerProcess, police: dict[str, str], case_id: int, probe) -> list[str]:
    body = identification_body(probe)
    response = httpx.post(f"{server.base}/v1/cases/{case_id}/identifications", headers=police, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [candidate["reference_id"] for candidate in response.json()["candidates"]]


def test_two_serve_processes_on_one_postgresql(tmp_path, database_url):
    """Two real ``readmit serve`` processes on loopback, each with its own data folder: enrolled
    through A, found through B by the next search; deleted through A, gone from B; B restarted on its old snapshot
    catches up from the log before it reports ready."""
    if database_url is None:
        pytest.skip("several processes share a PostgreSQL database")
    a = ServerProcess(tmp_path / "a", database_url)
    b = ServerProcess(tmp_path / "b", database_url, READMIT_AUDIT_KEY_FILE=str(tmp_path / "a" / "audit-log.key"))
    try:
        with httpx.Client(base_url=a.base, timeout=30) as client:
            gallery = client.post(
                "/v1/galleries",
                headers=a.admin,
                json={
                    "country": "SEN",
                    "modality": "face",
                    "template_format": {"model": "arcface-r100", "dimension": 64},
                },
            ).json()["id"]
            client.post("/v1/agreements", headers=a.admin, json=AGREEMENT)
            registry, police = a.principal("registry", "SEN"), a.principal("border_police", "FRA", "FRA-DCPAF")
            batch = records(40)
            client.post(f"/v1/galleries/{gallery}/records:batch", headers=registry, json={"records": batch[:20]})
        case = httpx.post(f"{b.base}/v1/cases", headers=police, json=case_body("C-1", countries=("SEN",))).json()
        # at once, not within the follower's delay: the search brings B's index up to the database
        assert identified_through(b, police, case["id"], batch[3]["templates"][0])[:1] == ["REF-00003"]

        httpx.delete(f"{a.base}/v1/galleries/{gallery}/records/REF-00003", headers=registry)
        assert "REF-00003" not in identified_through(b, police, case["id"], batch[3]["templates"][0])

        b.stop()  # graceful: its snapshot is current
        httpx.post(
            f"{a.base}/v1/galleries/{gallery}/records:batch", headers=registry, json={"records": batch[20:]}, timeout=30
        )
        b.start()  # ready only once caught up: no waiting here
        assert identified_through(b, police, case["id"], batch[33]["templates"][1])[:1] == ["REF-00033"]
        metrics = httpx.get(f"{b.base}/metrics", headers=b.admin).text
        assert 'readmit_index_loads_total{source="caught up"} 1.0' in metrics
    finally:
        b.stop()
        a.stop()


@pytest.fixture
def listening(database_url) -> Iterator[tuple[Engine, Listener]]:
    """A listener on the gallery changes' channel, connected (PostgreSQL only)."""
    if database_url is None:
        pytest.skip("SQLite has no notifications: followers poll")
    engine = create_engine(database_url)
    listener = Listener.for_engine(engine, GALLERY_CHANGES)
    assert listener is not None
    try:
        assert listener.wait(0.01) is True  # connected: what came before was told to nobody here
        assert listener.wait(0.01) is False  # listening from here on
        yield engine, listener
    finally:
        listener.close()
        engine.dispose()


def test_a_committed_change_wakes_the_listener_and_a_rolled_back_one_does_not(listening):
    engine, listener = listening
    with Session(engine) as session, session.begin():
        notify(session, GALLERY_CHANGES, "1:1")
        assert listener.wait(0.2) is False, "delivered at commit, not before"
    assert listener.wait(5) is True
    with Session(engine) as session:
        session.begin()
        notify(session, GALLERY_CHANGES, "1:2")
        session.rollback()
    assert listener.wait(0.2) is False


def test_a_listener_closed_during_its_wait_logs_no_interruption(listening, caplog):
    """A clean stop closes the connection under the waiting thread: not an outage to warn of."""
    _, listener = listening
    waiting = threading.Thread(target=listener.wait, args=(5,))
    waiting.start()
    time.sleep(0.2)  # in its wait
    listener.close()
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert not [r for r in caplog.records if "change notifications interrupted" in r.getMessage()]
