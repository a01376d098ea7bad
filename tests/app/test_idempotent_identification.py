"""An identification resent with its ``Idempotency-Key`` (after a lost answer, a timeout, a node's
failure) answers the search it made, through any process or node, instead of running a second
one whose candidates the consuls would review twice."""

import base64
import time

import numpy as np

from app.db.session import transaction
from app.matching.models import Search
from tests.harness import Service, case_body, identification_body, records

AGREEMENT = {"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"}


def enrolled(service: Service) -> tuple[list[dict], dict[str, str], int]:
    """A SEN gallery of 30 records searchable by FRA's border police: (records, police, case id)."""
    gallery = service.gallery("SEN")
    service.client.post("/v1/agreements", headers=service.admin, json=AGREEMENT)
    batch = records(30)
    registry = service.principal("registry", "SEN")
    service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    case = service.client.post("/v1/cases", headers=police, json=case_body("C-1"))
    return batch, police, case.json()["id"]


def identify(service: Service, police: dict[str, str], case_id: int, probe, key: str | None, **extra):
    headers = police if key is None else {**police, "Idempotency-Key": key}
    return service.client.post(
        f"/v1/cases/{case_id}/identifications", headers=headers, json=identification_body(probe, **extra)
    )


def searches_of(service: Service, police: dict[str, str], case_id: int) -> list[int]:
    return [search["id"] for search in service.client.get(f"/v1/cases/{case_id}", headers=police).json()["searches"]]


def actions(service: Service, resource: str) -> list[str]:
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events", headers=auditor, params={"limit": 1000}).json()["events"]
    return [event["action"] for event in events if event["resource"] == resource]


def test_a_resent_identification_answers_the_search_it_made(service):
    batch, police, case_id = enrolled(service)
    probe = batch[7]["templates"][0]
    first = identify(service, police, case_id, probe, "8e0c5a4e-1d1f-4c59-9a43-0d0a2d8f6b11")
    assert first.status_code == 200, first.text
    again = identify(service, police, case_id, probe, "8e0c5a4e-1d1f-4c59-9a43-0d0a2d8f6b11", wait_ms=10)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert [c["id"] for c in again.json()["candidates"]] == [c["id"] for c in first.json()["candidates"]]
    assert again.json()["candidates"][0]["reference_id"] == "REF-00007"
    assert searches_of(service, police, case_id) == [first.json()["id"]], "one search, not two"
    resource = f"case/{case_id}/search/{first.json()['id']}"
    assert actions(service, resource) == ["search.submit", "search.complete", "search.read"], (
        "the resend is audited as the read of the search it answers"
    )

    without_key = identify(service, police, case_id, probe, None)
    assert without_key.json()["id"] != first.json()["id"], "without a key, each request is a search"


def test_a_key_is_one_request_of_one_case(service):
    batch, police, case_id = enrolled(service)
    key = "retry-me"
    first = identify(service, police, case_id, batch[1]["templates"][0], key)
    assert first.status_code == 200, first.text

    other_probe = identify(service, police, case_id, batch[2]["templates"][0], key)
    assert other_probe.status_code == 422
    assert other_probe.json()["error"]["code"] == "idempotency_key_reused"
    other_option = identify(service, police, case_id, batch[1]["templates"][0], key, max_candidates=3)
    assert other_option.json()["error"]["code"] == "idempotency_key_reused"
    as_base64 = identification_body(batch[1]["templates"][0])
    as_base64["probes_b64"] = [
        base64.b64encode(np.asarray(p, "<f4").tobytes()).decode() for p in as_base64.pop("probes")
    ]
    same_values = service.client.post(
        f"/v1/cases/{case_id}/identifications", headers={**police, "Idempotency-Key": key}, json=as_base64
    )
    assert same_values.json()["id"] == first.json()["id"], "the same probe values, however encoded"
    default_fpir = service.settings.default_fpir
    spelt_out = identify(service, police, case_id, batch[1]["templates"][0], key, target_fpir=default_fpir)
    assert spelt_out.json()["id"] == first.json()["id"], "the default FPIR, written out, is the same request"

    second_case = service.client.post("/v1/cases", headers=police, json=case_body("C-2")).json()["id"]
    elsewhere = identify(service, police, second_case, batch[1]["templates"][0], key)
    assert elsewhere.status_code == 200 and elsewhere.json()["id"] != first.json()["id"]

    other_agency = service.principal("border_police", "FRA", "FRA-PAF-NICE")
    assert identify(service, other_agency, case_id, batch[1]["templates"][0], key).status_code == 404


def test_a_malformed_key_is_refused(service):
    batch, police, case_id = enrolled(service)
    for key in ("", "x" * 256, "spaces are not tokens"):
        refused = identify(service, police, case_id, batch[0]["templates"][0], key)
        assert refused.status_code == 422, key
        assert "error" in refused.json()
    assert searches_of(service, police, case_id) == []


def test_a_search_still_queued_is_answered_once_it_ends(service):
    batch, police, case_id = enrolled(service)
    service.runtime.scheduler.pause()
    queued = identify(service, police, case_id, batch[4]["templates"][0], "k-1", wait_ms=0)
    assert queued.status_code == 202, queued.text
    resent = identify(service, police, case_id, batch[4]["templates"][0], "k-1", wait_ms=0)
    assert resent.status_code == 202 and resent.json()["id"] == queued.json()["id"]
    service.runtime.scheduler.resume()
    ended = identify(service, police, case_id, batch[4]["templates"][0], "k-1", wait_ms=10_000)
    assert ended.status_code == 200, ended.text
    assert ended.json()["id"] == queued.json()["id"]
    assert ended.json()["candidates"][0]["reference_id"] == "REF-00004"
    assert searches_of(service, police, case_id) == [queued.json()["id"]]


def test_a_resend_to_another_node_answers_the_search_the_first_accepted(nodes):
    """The client's first node accepted the search (queued under its lease) and stopped answering;
    the resend to the second node gets the same search, run once, whichever node runs it."""
    a, b = nodes
    batch, police, case_id = enrolled(a)
    a.runtime.scheduler.pause()
    accepted = identify(a, police, case_id, batch[9]["templates"][0], "lost-answer", wait_ms=0)
    assert accepted.status_code == 202
    resent = identify(b, police, case_id, batch[9]["templates"][0], "lost-answer", wait_ms=0)
    assert resent.json()["id"] == accepted.json()["id"]
    a.runtime.scheduler.resume()
    deadline = time.monotonic() + 20
    while (view := identify(b, police, case_id, batch[9]["templates"][0], "lost-answer")).json()["status"] != "done":
        assert time.monotonic() < deadline, view.text
    assert view.json()["candidates"][0]["reference_id"] == "REF-00009"
    with transaction(a.runtime.sessions) as session:
        assert session.query(Search).filter(Search.case_id == case_id).count() == 1
