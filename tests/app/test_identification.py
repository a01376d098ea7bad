"""The whole story through HTTP: enrol, open a case, identify, verify, confirm, audit."""

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, event

from tests.harness import ServerProcess, case_body, identification_body, settled

DIM = 512
BACKGROUND_THREADS = ("audit-sequencer", "case-linker", "search-claimer", "deduplication", "expiry", "index-follower")
"""The service's own pollers, whose transactions may begin while an identification is answered:
not the identification's."""

_begun_by: list[tuple[str, Engine]] | None = None
"""While a test records them, the threads that begin a transaction, and on which engine."""


@event.listens_for(Engine, "begin")
def _record_begin(connection) -> None:
    """Registered once, at import, before any engine exists. Added to a running service's engine,
    a listener raced with the threads iterating its listeners: one of them failed its begin
    after taking the SQLite write lock, which nobody released, and the service hung."""
    if _begun_by is not None:
        _begun_by.append((threading.current_thread().name, connection.engine))


def enrol(service, gallery_id, registry, people, prefix="SEN"):
    records = [
        {
            "reference_id": f"{prefix}-{i:04d}",
            "templates": people.gallery[people.gallery_ids == i].tolist(),
            "attributes": {"family_name": f"Family{i}", "given_names": f"Given{i}"},
        }
        for i in range(len(np.unique(people.gallery_ids)))
    ]
    response = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": records}, headers=registry
    )
    assert response.json()["inserted"] == len(records)


def searchable_sen_gallery(service, people):
    """An enrolled SEN face gallery, a FRA-SEN agreement for it, and a FRA border police key."""
    gallery = service.gallery("SEN", dimension=DIM)
    enrol(service, gallery, service.principal("registry", "SEN"), people, "SEN")
    service.client.post(
        "/v1/agreements",
        headers=service.admin,
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    )
    return gallery, service.principal("border_police", "FRA", "FRA-DCPAF")


@pytest.fixture
def story(service, people):
    sen, police = searchable_sen_gallery(service, people)
    mli = service.gallery("MLI", dimension=DIM)  # enrolled, but no agreement with MLI
    enrol(service, mli, service.principal("registry", "MLI"), people, "MLI")
    return service, sen, mli, police


def open_case(service, police, ref="DCPAF-2026-0001", days_ago=3, limit=45, countries=("SEN", "MLI")):
    response = service.client.post(
        "/v1/cases", headers=police, json=case_body(ref, days_ago, limit, countries, "readmission_agreement")
    )
    assert response.status_code == 201, response.text
    return response.json()


def identify(service, police, case_id, probes, **extra):
    body = identification_body(probes, **extra)
    return service.client.post(f"/v1/cases/{case_id}/identifications", headers=police, json=body)


def test_enrolled_person_is_found_confirmed_and_the_case_identified(story, people):
    service, sen, _, police = story
    case = open_case(service, police)
    assert case["status"] == "open"
    assert datetime.fromisoformat(case["deadline"]) == datetime.fromisoformat(case["detained_at"]) + timedelta(days=45)

    person = int(people.mated_ids[0])
    response = identify(service, police, case["id"], people.mated_probes[0])
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "done"
    assert result["searched_galleries"] == [sen]
    assert result["skipped"] == [{"country": "MLI", "reason": "no_agreement"}]
    top = result["candidates"][0]
    assert (top["reference_id"], top["rank"], top["band"], top["country"]) == (f"SEN-{person:04d}", 1, "match", "SEN")
    assert top["attributes"] is None, "identity attributes only after confirmation"
    assert len({c["reference_id"] for c in result["candidates"]}) == len(result["candidates"])

    verification = service.client.post(
        f"/v1/cases/{case['id']}/verifications",
        headers=police,
        json={"gallery_id": sen, "reference_id": f"SEN-{person:04d}", "probes": [people.mated_probes[0].tolist()]},
    )
    assert verification.status_code == 200 and verification.json()["decision"] == "match"
    impostor = service.client.post(
        f"/v1/cases/{case['id']}/verifications",
        headers=police,
        json={
            "gallery_id": sen,
            "reference_id": f"SEN-{(person + 1) % 300:04d}",
            "probes": [people.mated_probes[0].tolist()],
        },
    )
    assert impostor.json()["decision"] == "no_match"

    consul = service.principal("consular", "SEN")
    other_consul = service.principal("consular", "MLI")
    assert service.client.get("/v1/review/candidates", headers=other_consul).json() == []
    queue = service.client.get("/v1/review/candidates", headers=consul).json()
    assert queue[0]["id"] == top["id"] and queue[0]["attributes"]["family_name"] == f"Family{person}"
    assert 0 < queue[0]["remaining_seconds"] <= 42 * 86400
    record = service.client.get(f"/v1/galleries/{sen}/records/SEN-{person:04d}", headers=consul)
    assert record.status_code == 200
    unrelated = service.client.get(f"/v1/galleries/{sen}/records/SEN-{(person + 7) % 300:04d}", headers=consul)
    assert unrelated.status_code == 404, "a consul reads only records a candidate points to"

    decision = service.client.post(
        f"/v1/candidates/{top['id']}/decision",
        headers=consul,
        json={"decision": "confirmed", "note": "fingerprints and civil record agree"},
    )
    assert {k: decision.json()[k] for k in ("id", "review_state", "case_id", "case_status", "first_reviewed_by")} == {
        "id": top["id"],
        "review_state": "confirmed",
        "case_id": case["id"],
        "case_status": "identified",
        "first_reviewed_by": None,
    }, "without a review policy, one consul's confirmation identifies the case"
    again = service.client.post(
        f"/v1/candidates/{top['id']}/decision", headers=consul, json={"decision": "rejected", "note": "x"}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"

    polled = service.client.get(f"/v1/searches/{result['id']}", headers=police).json()
    assert polled["candidates"][0]["attributes"]["family_name"] == f"Family{person}"
    assert service.client.get(f"/v1/cases/{case['id']}", headers=police).json()["status"] == "identified"

    auditor = service.principal("auditor")
    assert service.client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    actions = [e["action"] for e in events]
    for action in (
        "case.open",
        "search.submit",
        "search.complete",
        "record.verify",
        "candidate.list",
        "candidate.confirm",
    ):
        assert action in actions
    assert any(e["action"] == "case.transition" and e["details"]["to"] == "identified" for e in events)


def test_a_person_who_is_not_enrolled_gets_no_candidate(story, people):
    service, _, _, police = story
    case = open_case(service, police)
    misses = 0
    for probe in people.nonmated_probes[:10]:
        result = identify(service, police, case["id"], probe).json()
        assert result["status"] == "done"
        misses += result["candidates"] == []
    assert misses == 10, "no nearest neighbour is forced into the list"


def test_multi_sample_probes_and_mosip_fpir(story, people):
    service, _, _, police = story
    case = open_case(service, police)
    person = int(people.mated_ids[3])
    probes = np.vstack([people.nonmated_probes[0], people.mated_probes[3]])  # one poor sample, one good
    result = identify(service, police, case["id"], probes, target_fpir=30, max_candidates=5).json()
    assert result["target_fpir"] == pytest.approx(0.001)
    assert result["candidates"][0]["reference_id"] == f"SEN-{person:04d}"
    bad = identify(service, police, case["id"], probes, target_fpir=1.5)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_fpir"


def test_scoping_of_cases_and_searches(story, people):
    service, _, _, police = story
    case = open_case(service, police)
    result = identify(service, police, case["id"], people.mated_probes[1]).json()
    other_agency = service.principal("border_police", "FRA", "FRA-PAF-LYON")
    assert service.client.get(f"/v1/cases/{case['id']}", headers=other_agency).status_code == 404
    assert service.client.get(f"/v1/searches/{result['id']}", headers=other_agency).status_code == 404
    assert identify(service, other_agency, case["id"], people.mated_probes[1]).status_code == 404
    duplicate = service.client.post(
        "/v1/cases",
        headers=police,
        json=case_body("DCPAF-2026-0001"),
    )
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "duplicate_case"


def test_bad_probes_and_deadlines(story, people):
    service, _, _, police = story
    case = open_case(service, police)
    wrong_dimension = identify(service, police, case["id"], np.ones(DIM - 1))
    assert wrong_dimension.status_code == 422 and wrong_dimension.json()["error"]["code"] == "invalid_template"
    zero = identify(service, police, case["id"], np.zeros(DIM))
    assert zero.json()["error"]["code"] == "invalid_template"
    not_presumed = identify(service, police, case["id"], people.mated_probes[0], countries=["MAR"])
    assert not_presumed.json()["error"]["code"] == "country_not_presumed"
    past = service.client.post(
        "/v1/cases",
        headers=police,
        json=case_body("OLD", days_ago=50),
    )
    assert past.status_code == 409 and past.json()["error"]["code"] == "deadline_passed"
    too_long = service.client.post(
        "/v1/cases",
        headers=police,
        json=case_body("LONG", limit=541),
    )
    assert too_long.status_code == 422
    unknown_basis = service.client.post(
        "/v1/cases",
        headers=police,
        json=case_body("X", legal_basis="because"),
    )
    assert unknown_basis.json()["error"]["code"] == "validation_error"
    as_number = service.client.post(
        "/v1/cases", headers=police, json={**case_body("NUM"), "detained_at": 1_700_000_000}
    )
    assert as_number.status_code == 422, "a number is not read as a Unix timestamp"
    agreement = {
        "receiving_country": "FRA",
        "origin_country": "MAR",
        "modalities": ["face"],
        "valid_from": "2020-01-01",
    }
    ends_as_number = service.client.post("/v1/agreements", headers=service.admin, json={**agreement, "valid_to": 1.5})
    assert ends_as_number.status_code == 422 and ends_as_number.json()["error"]["code"] == "validation_error"


def test_a_case_past_its_deadline_expires_and_refuses_searches(story, people):
    service, _, _, police = story
    case = open_case(service, police, days_ago=1, limit=2)
    with service.runtime.engine.begin() as connection:  # time passes: move the deadline into the past
        from sqlalchemy import text

        connection.execute(
            text("UPDATE cases SET deadline = :past WHERE id = :id"),
            {"past": datetime.now(UTC) - timedelta(minutes=1), "id": case["id"]},
        )
    refused = identify(service, police, case["id"], people.mated_probes[0])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "deadline_passed"
    service.runtime.expire_due()
    assert service.client.get(f"/v1/cases/{case['id']}", headers=police).json()["status"] == "expired"
    closed = service.client.patch(f"/v1/cases/{case['id']}", headers=police, json={"status": "closed"})
    assert closed.json()["status"] == "closed"
    reopened = service.client.patch(f"/v1/cases/{case['id']}", headers=police, json={"status": "unidentified"})
    assert reopened.status_code == 409 and reopened.json()["error"]["code"] == "invalid_transition"


def test_probes_of_ended_cases_are_erased_after_the_retention_period(story, people):
    from sqlalchemy import text

    service, _, _, police = story
    kept = open_case(service, police, ref="STILL-OPEN")
    ended = open_case(service, police, ref="ENDED")
    for case in (kept, ended):
        assert identify(service, police, case["id"], people.mated_probes[0]).status_code == 200
    service.client.patch(f"/v1/cases/{ended['id']}", headers=police, json={"status": "closed"})
    engine = service.runtime.engine

    def probe_bytes(case_id):
        with engine.connect() as connection:
            return connection.execute(text("SELECT probes FROM searches WHERE case_id = :c"), {"c": case_id}).scalar()

    service.runtime.expire_due()
    assert probe_bytes(ended["id"]) is not None, "kept during the retention period"
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE cases SET status_changed_at = :t WHERE id = :c"),
            {"t": datetime.now(UTC) - timedelta(days=31), "c": ended["id"]},
        )
    service.runtime.expire_due()
    assert probe_bytes(ended["id"]) is None
    assert probe_bytes(kept["id"]) is not None
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    assert any(e["action"] == "probe.erase" and e["resource"] == f"case/{ended['id']}" for e in events)
    assert any(e["action"] == "search.submit" and e["resource"].startswith(f"case/{ended['id']}/") for e in events)
    assert service.client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True
    candidates = service.client.get(f"/v1/cases/{ended['id']}", headers=police).json()["searches"][0]["candidates"]
    assert candidates, "searches and their candidates stay; only the probe bytes go"


def test_an_identification_answered_in_time_is_written_once_and_read_nothing_back(story, people):
    """Answered within wait_ms: one write transaction (the batch's), holding the search ended,
    its candidates and both its events, submitted then completed; the answer is what it wrote
    (the same as a later read of the search). The audit log's sequencer, which may put those
    events in the Merkle tree meanwhile, the case linker, which compares the search's probes
    with other cases' after it has ended, and the other background pollers (the shared queue's
    claimer looks every second) are not counted."""
    service, _, _, police = story
    case = open_case(service, police)
    identify(service, police, case["id"], people.mated_probes[0])  # warm: calibration, caches
    global _begun_by
    _begun_by = begun = []
    try:
        answer = identify(service, police, case["id"], people.mated_probes[1])
    finally:
        _begun_by = None
    assert answer.status_code == 200 and answer.json()["status"] == "done"
    assert answer.json()["candidates"]
    writes = [thread for thread, engine in begun if engine is service.runtime.engine]
    assert len([thread for thread in writes if thread not in BACKGROUND_THREADS]) == 1, writes
    read = service.client.get(f"/v1/searches/{answer.json()['id']}", headers=police).json()
    assert answer.json() == read
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    resource = f"case/{case['id']}/search/{answer.json()['id']}"
    assert [e["action"] for e in events if e["resource"] == resource][:2] == ["search.submit", "search.complete"]
    assert service.client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True


def test_a_search_whose_wait_runs_out_as_its_batch_ends_is_written_once(story, people, monkeypatch):
    """The caller's wait_ms runs out while the batch that ran its search is writing it: the
    caller waits for that write and answers the result; the search is written once, with one
    submit and one complete event, and the chain verifies."""
    from app.matching.executor import SearchExecutor

    service, _, _, police = story
    case = open_case(service, police)
    identify(service, police, case["id"], people.mated_probes[0])  # warm: calibration, caches
    writing, release = threading.Event(), threading.Event()
    claim = SearchExecutor._claim

    def slow_claim(self, jobs):
        taken = claim(self, jobs)
        writing.set()
        assert release.wait(10), "the test never released the batch"
        return taken

    monkeypatch.setattr(SearchExecutor, "_claim", slow_claim)
    answers = []
    caller = threading.Thread(
        target=lambda: answers.append(identify(service, police, case["id"], people.mated_probes[1], wait_ms=50))
    )
    caller.start()
    assert writing.wait(10)
    time.sleep(0.2)  # the caller's 50 ms run out while the batch holds its search
    release.set()
    caller.join(10)
    [answer] = answers
    assert answer.status_code == 200 and answer.json()["status"] == "done", answer.text
    assert answer.json()["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[1]):04d}"
    searches = service.client.get(f"/v1/cases/{case['id']}", headers=police).json()["searches"]
    assert [s["id"] for s in searches].count(answer.json()["id"]) == 1 and len(searches) == 2
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    resource = f"case/{case['id']}/search/{answer.json()['id']}"
    assert sorted(e["action"] for e in events if e["resource"] == resource) == ["search.complete", "search.submit"]
    assert service.client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True


def test_a_search_its_caller_stopped_waiting_for_is_written_queued_then_ended(story, people):
    """wait_ms 0 with the workers held: answered 202 queued (written before the answer, so a
    restart resumes it), then ended by its batch: one row, submitted once, completed once."""
    service, _, _, police = story
    case = open_case(service, police)
    service.runtime.scheduler.pause()
    queued = identify(service, police, case["id"], people.mated_probes[2], wait_ms=0)
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    service.runtime.scheduler.resume()
    done = settled(service.client, police, queued.json()["id"])
    assert done["status"] == "done" and done["candidates"]
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    resource = f"case/{case['id']}/search/{queued.json()['id']}"
    assert [e["action"] for e in events if e["resource"] == resource and e["action"] != "search.read"] == [
        "search.submit",
        "search.complete",
    ]


def test_a_search_of_a_gallery_whose_index_is_not_loaded_fails_with_its_code(story, people, monkeypatch):
    """The stable code a client branches on (index_unavailable: retry shortly), not a class name."""
    from app.indexes.exceptions import IndexUnavailable

    service, _, _, police = story
    case = open_case(service, police)

    def not_loaded(gallery_id):
        raise IndexUnavailable(f"gallery {gallery_id}'s index is loading")

    monkeypatch.setattr(service.runtime.registry, "get", not_loaded)
    answer = identify(service, police, case["id"], people.mated_probes[0])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["error"]) == ("failed", "index_unavailable")


def test_the_first_verification_after_a_start_answers_and_the_service_goes_on(tmp_path, database_url, people):
    """After a start, the first verification of a gallery loads its calibration, which reads and
    writes in a transaction of its own. Inside the verification's write transaction, on SQLite,
    it waited for the writers' turn its own thread held: the call never returned, and every
    request after it hung behind that turn (a real process: a hang fails the test, not the run)."""
    server = ServerProcess(tmp_path / "data", database_url)
    try:
        with httpx.Client(base_url=server.base, timeout=60) as client:
            service = SimpleNamespace(
                client=client, admin=server.admin, principal=server.principal, gallery=server.gallery
            )
            sen, police = searchable_sen_gallery(service, people)
            case = open_case(service, police)  # SEN and MLI presumed
            server.stop()
            server.start()  # nothing calibrated in this process yet
            person = int(people.mated_ids[0])
            body = {"gallery_id": sen, "reference_id": f"SEN-{person:04d}", "probes": [people.mated_probes[0].tolist()]}
            answer = client.post(f"/v1/cases/{case['id']}/verifications", headers=police, json=body)
            assert answer.status_code == 200 and answer.json()["decision"] == "match"
            assert client.get("/readyz").status_code == 200
            events = {
                country: client.get("/v1/audit/events", headers=server.principal("auditor", country)).json()
                for country in ("SEN", "MLI")
            }
    finally:
        server.stop()
    verified = [e["resource"] for e in events["SEN"]["events"] if e["action"] == "record.verify"]
    assert verified == [f"case/{case['id']}/gallery/{sen}/record/SEN-{person:04d}"]
    assert not [e for e in events["MLI"]["events"] if e["action"] == "record.verify"], "not MLI's record"
