"""Review outcomes through HTTP: an inconclusive answer keeps the case open, and a country that
requires two reviewers (four-eyes) needs two different consuls before a case is identified."""

import threading
import time

import numpy as np
import pytest

from app.review import service as review_service
from tests.harness import case_body, identification_body

DIM = 64


class World:
    """A SEN face gallery, a FRA-SEN agreement, an open case whose identification found its
    person, and the consuls of both countries."""

    def __init__(self, service):
        self.service = service
        templates = np.random.default_rng(11).standard_normal((8, DIM)).astype(np.float32)
        gallery = service.gallery("SEN", dimension=DIM)
        registry = service.principal("registry", "SEN")
        records = [
            {"reference_id": f"SEN-{i}", "templates": [templates[i].tolist()], "attributes": {"family_name": f"Sow{i}"}}
            for i in range(8)
        ]
        service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records}, headers=registry)
        service.client.post(
            "/v1/agreements",
            headers=service.admin,
            json={
                "receiving_country": "FRA",
                "origin_country": "SEN",
                "modalities": ["face"],
                "valid_from": "2020-01-01",
            },
        )
        self.police = service.principal("border_police", "FRA", "FRA-DCPAF")
        self.case = service.client.post("/v1/cases", headers=self.police, json=case_body("DCPAF-4E")).json()["id"]
        self.probe = templates[2]
        search = self.post(f"/v1/cases/{self.case}/identifications", self.police, identification_body(self.probe))
        assert search.status_code == 200 and search.json()["candidates"][0]["reference_id"] == "SEN-2", search.text
        self.search = search.json()["id"]
        self.candidate = search.json()["candidates"][0]["id"]
        self.first, self.first_id = self.consul("SEN consul Dakar desk")
        self.second, self.second_id = self.consul("SEN consul Paris desk")
        self.other_country, _ = self.consul("MLI consul", "MLI")
        self.auditor = service.principal("auditor")

    def consul(self, name, country="SEN"):
        body = {"name": name, "role": "consular", "country": country}
        created = self.service.client.post("/v1/principals", headers=self.service.admin, json=body).json()
        return {"Authorization": f"Bearer {created['api_key']}"}, created["id"]

    def post(self, path, headers, body):
        return self.service.client.post(path, headers=headers, json=body)

    def decide(self, headers, decision, note="checked against the consulate's civil register"):
        return self.post(f"/v1/candidates/{self.candidate}/decision", headers, {"decision": decision, "note": note})

    def require_second_reviewer(self, required=True):
        answer = self.service.client.put(
            "/v1/review-policies/SEN", headers=self.service.admin, json={"second_reviewer_required": required}
        )
        assert answer.status_code == 200, answer.text

    def case_file(self):
        return self.service.client.get(f"/v1/cases/{self.case}", headers=self.police).json()

    def seen_by_police(self):
        search = self.service.client.get(f"/v1/searches/{self.search}", headers=self.police).json()
        return next(c for c in search["candidates"] if c["id"] == self.candidate)

    def events(self, action=None):
        events = self.service.client.get("/v1/audit/events?limit=1000", headers=self.auditor).json()["events"]
        return [e for e in events if action is None or e["action"] == action]

    def audit_verifies(self):
        return self.service.client.get("/v1/audit/verify", headers=self.auditor).json()["ok"] is True


@pytest.fixture
def world(service):
    return World(service)


def test_inconclusive_needs_a_note_keeps_the_case_open_and_the_police_see_it(world):
    missing = world.post(f"/v1/candidates/{world.candidate}/decision", world.first, {"decision": "inconclusive"})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "validation_error"
    blank = world.decide(world.first, "inconclusive", note="   ")
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "note_required", blank.text
    assert world.seen_by_police()["review_state"] == "pending", "a refused decision changes nothing"

    answer = world.decide(world.first, "inconclusive", note="the register's photograph is 20 years old")
    assert answer.status_code == 200, answer.text
    assert answer.json()["review_state"] == "inconclusive" and answer.json()["case_status"] == "open"
    assert answer.json()["reviewed_by"] == {"id": world.first_id, "name": "SEN consul Dakar desk"}

    case = world.case_file()
    assert case["status"] == "open"
    assert case["searches"][0]["candidates"][0]["review_state"] == "inconclusive"
    assert case["searches"][0]["candidates"][0]["note"] == "the register's photograph is 20 years old"
    seen = world.seen_by_police()
    assert (seen["review_state"], seen["note"], seen["attributes"]) == (
        "inconclusive",
        "the register's photograph is 20 years old",
        None,
    ), "no identity attributes without a confirmation"
    again = world.post(f"/v1/cases/{world.case}/identifications", world.police, identification_body(world.probe + 0.01))
    assert again.status_code == 200, "an open case takes another search"
    assert world.decide(world.second, "confirmed").json()["error"]["code"] == "already_decided"

    [event] = world.events("candidate.mark_inconclusive")
    assert (event["principal_id"], event["outcome"], event["details"]["review_state"]) == (
        world.first_id,
        "inconclusive",
        "inconclusive",
    )
    assert event["details"]["officers"] == [world.first_id]
    assert not [e for e in world.events("case.transition") if e["details"]["to"] == "identified"]
    assert world.audit_verifies()


def test_review_policies_are_set_by_admins_and_read_by_the_countrys_consuls(world):
    service = world.service
    default = service.client.get("/v1/review-policies/SEN", headers=service.admin)
    assert default.status_code == 200
    assert default.json() == {
        "country": "SEN",
        "second_reviewer_required": False,
        "updated_at": None,
        "updated_by": None,
    }

    for refused in (world.first, world.police, world.auditor):
        put = service.client.put("/v1/review-policies/SEN", headers=refused, json={"second_reviewer_required": False})
        assert put.status_code == 403 and put.json()["error"]["code"] == "forbidden"
    world.require_second_reviewer()
    read = service.client.get("/v1/review-policies/SEN", headers=world.first)
    assert read.status_code == 200 and read.json()["second_reviewer_required"] is True
    assert read.json()["updated_at"] is not None
    elsewhere = service.client.get("/v1/review-policies/SEN", headers=world.other_country)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"
    assert service.client.get("/v1/review-policies/SEN", headers=world.police).status_code == 403
    unknown = service.client.put(
        "/v1/review-policies/XXA", headers=service.admin, json={"second_reviewer_required": True}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "invalid_country"

    [event] = world.events("review_policy.set")
    assert event["resource"] == "review-policy/SEN"
    assert event["details"]["second_reviewer_required"] == {"from": False, "to": True}
    assert "SEN" in event["details"]["countries"]
    assert world.audit_verifies()


def test_four_eyes_needs_two_different_consuls_before_the_case_is_identified(world):
    world.require_second_reviewer()
    first = world.decide(world.first, "confirmed", note="matches the passport copy")
    assert first.status_code == 200, first.text
    assert first.json()["review_state"] == "pending_second_review" and first.json()["case_status"] == "open"
    assert (first.json()["first_reviewed_by"]["id"], first.json()["reviewed_by"]) == (world.first_id, None)
    assert world.case_file()["status"] == "open"
    assert world.seen_by_police()["review_state"] == "pending_second_review"
    assert world.seen_by_police()["attributes"] is None, "not confirmed yet: no identity for the police"

    for decision in ("confirmed", "rejected"):
        same = world.decide(world.first, decision)
        assert same.status_code == 409 and same.json()["error"]["code"] == "same_reviewer", same.text
    awaiting = world.service.client.get("/v1/review/candidates?state=pending_second_review", headers=world.second)
    [item] = awaiting.json()
    assert item["id"] == world.candidate
    assert item["first_reviewed_by"] == {"id": world.first_id, "name": "SEN consul Dakar desk"}
    assert item["first_note"] == "matches the passport copy" and item["first_reviewed_at"] is not None

    second = world.decide(world.second, "confirmed", note="fingerprint card agrees too")
    assert second.status_code == 200, second.text
    assert second.json()["review_state"] == "confirmed" and second.json()["case_status"] == "identified"
    assert (second.json()["first_reviewed_by"]["id"], second.json()["reviewed_by"]["id"]) == (
        world.first_id,
        world.second_id,
    )
    assert world.case_file()["status"] == "identified"
    assert world.seen_by_police()["attributes"] == {"family_name": "Sow2"}, "confirmed: the police learn who it is"

    confirmations = world.events("candidate.confirm")
    assert [
        (e["principal_id"], e["outcome"], e["details"]["review_state"], e["details"]["officers"]) for e in confirmations
    ] == [
        (world.first_id, "confirmed", "pending_second_review", [world.first_id]),
        (world.second_id, "confirmed", "confirmed", [world.first_id, world.second_id]),
    ]
    identified = [e for e in world.events("case.transition") if e["details"]["to"] == "identified"]
    assert [e["principal_id"] for e in identified] == [world.second_id]
    assert world.audit_verifies()


def test_a_second_reviewers_rejection_rejects_and_the_first_confirmation_stays(world):
    world.require_second_reviewer()
    assert (
        world.decide(world.first, "confirmed", note="looks like him").json()["review_state"] == "pending_second_review"
    )
    world.require_second_reviewer(False)  # a candidate already waiting still needs its second review
    assert world.decide(world.first, "confirmed").json()["error"]["code"] == "same_reviewer"

    rejected = world.decide(world.second, "rejected", note="the birth register shows a different father")
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["review_state"], rejected.json()["case_status"]) == ("rejected", "open")
    [item] = world.service.client.get("/v1/review/candidates?state=rejected", headers=world.first).json()
    assert item["first_reviewed_by"]["id"] == world.first_id and item["first_note"] == "looks like him"
    assert item["reviewed_by"] == {"id": world.second_id, "name": "SEN consul Paris desk"}
    assert item["note"] == "the birth register shows a different father"
    assert world.seen_by_police()["review_state"] == "rejected"

    [confirmation] = world.events("candidate.confirm")
    [rejection] = world.events("candidate.reject")
    assert (confirmation["principal_id"], confirmation["details"]["review_state"]) == (
        world.first_id,
        "pending_second_review",
    )
    assert (rejection["principal_id"], rejection["outcome"], rejection["details"]["review_state"]) == (
        world.second_id,
        "rejected",
        "rejected",
    )
    assert rejection["details"]["officers"] == [world.first_id, world.second_id]
    assert world.audit_verifies()


def test_consuls_confirming_at_once_are_one_first_and_one_second(world, monkeypatch):
    """The first decision holds the candidate's row while the others arrive: each reads the state
    the one before it left, so one confirmation is first, one second, the rest already decided."""
    world.require_second_reviewer()
    third, _ = world.consul("SEN consul Lyon desk")
    holding = threading.Event()
    required = review_service.second_reviewer_required

    def slow_policy_read(session, country):
        holding.set()
        time.sleep(0.3)  # the other consuls' requests arrive while this decision is under way
        return required(session, country)

    monkeypatch.setattr(review_service, "second_reviewer_required", slow_policy_read)
    answers = []
    first = threading.Thread(target=lambda: answers.append(world.decide(world.first, "confirmed")))
    first.start()
    assert holding.wait(10)
    others = [
        threading.Thread(target=lambda h=headers: answers.append(world.decide(h, "confirmed")))
        for headers in (world.second, third)
    ]
    for thread in others:
        thread.start()
    for thread in (first, *others):
        thread.join(30)

    outcomes = sorted(a.json().get("review_state") or a.json()["error"]["code"] for a in answers)
    assert outcomes == ["already_decided", "confirmed", "pending_second_review"], [a.text for a in answers]
    confirmations = world.events("candidate.confirm")
    assert [e["details"]["review_state"] for e in confirmations] == ["pending_second_review", "confirmed"]
    assert len([e for e in world.events("case.transition") if e["details"]["to"] == "identified"]) == 1
    assert world.case_file()["status"] == "identified"
    assert world.audit_verifies()
