"""Record history through HTTP: a registry sees every version of its records (attributes, a digest
of the templates, who and when), an erasure leaves only digests and a tombstone, and a candidate
shows the record version it matched and whether the record changed since."""

import hashlib

import numpy as np
import pytest

from tests.harness import case_body, identification_body

DIM = 64


def digest(templates):
    """The documented digest: SHA-256 of the templates as stored in clear (little-endian float32,
    samples in order); an inner-product gallery stores them as sent."""
    return hashlib.sha256(np.asarray(templates, dtype="<f4").tobytes()).hexdigest()


def named(service, name, role, country):
    response = service.client.post(
        "/v1/principals", json={"name": name, "role": role, "country": country}, headers=service.admin
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}, response.json()["id"]


@pytest.fixture
def registry_world(service):
    gallery_id = service.gallery("SEN", dimension=DIM, metric="inner_product")
    clerk, clerk_id = named(service, "Aminata Sow, civil register Dakar", "registry", "SEN")
    supervisor, supervisor_id = named(service, "Ibrahima Ba, civil register Thiès", "registry", "SEN")
    return service, gallery_id, (clerk, clerk_id), (supervisor, supervisor_id)


def enrol(service, gallery_id, headers, reference_id, templates, attributes):
    body = {"records": [{"reference_id": reference_id, "templates": templates, "attributes": attributes}]}
    response = service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json=body, headers=headers)
    assert response.status_code == 200 and not response.json()["errors"], response.text
    return response.json()


def history(service, gallery_id, headers, reference_id="SEN-1"):
    return service.client.get(f"/v1/galleries/{gallery_id}/records/{reference_id}/history", headers=headers)


def test_history_lists_each_version_with_its_attributes_digest_author_and_time(registry_world):
    service, gallery_id, (clerk, clerk_id), (supervisor, supervisor_id) = registry_world
    rng = np.random.default_rng(3)
    first, second = rng.standard_normal((2, DIM)).round(4).tolist(), rng.standard_normal((1, DIM)).round(4).tolist()
    enrol(service, gallery_id, clerk, "SEN-1", first, {"family_name": "Diallo", "given_names": "Mariama"})
    assert enrol(service, gallery_id, clerk, "SEN-1", first, {"family_name": "Diallo", "given_names": "Mariama"}) == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 1,
        "errors": [],
    }, "an identical resend makes no version"
    enrol(service, gallery_id, supervisor, "SEN-1", second, {"family_name": "Diallo", "given_names": "Mariam"})
    enrol(service, gallery_id, clerk, "SEN-1", second, {"family_name": "Diallo", "given_names": "Mariam Aïssatou"})

    response = history(service, gallery_id, clerk)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["gallery_id"], body["reference_id"], body["version"]) == (gallery_id, "SEN-1", 3)
    versions = body["versions"]
    assert [(v["version"], v["change"], v["changed_by"]["id"]) for v in versions] == [
        (3, "updated", clerk_id),
        (2, "updated", supervisor_id),
        (1, "enrolled", clerk_id),
    ]
    assert versions[1]["changed_by"]["name"] == "Ibrahima Ba, civil register Thiès"
    assert [v["attributes"]["given_names"] for v in versions] == ["Mariam Aïssatou", "Mariam", "Mariama"]
    assert [v["template_digest"] for v in versions] == [digest(second), digest(second), digest(first)]
    assert [v["template_count"] for v in versions] == [1, 1, 2]
    assert versions[0]["changed_at"] > versions[1]["changed_at"] > versions[2]["changed_at"]
    assert "templates" not in response.text

    record = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-1", headers=clerk).json()
    assert record["version"] == 3 and record["updated_at"] == versions[0]["changed_at"]
    assert history(service, gallery_id, service.admin).json() == body, "the admin reads any gallery's history"

    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    reads = [e for e in events if e["action"] == "record.read_history"]
    assert [e["resource"] for e in reads] == [f"gallery/{gallery_id}/record/SEN-1"] * 2
    assert reads[0]["principal_id"] == clerk_id


def test_history_is_not_found_outside_the_registrys_country(registry_world):
    service, gallery_id, (clerk, _), _ = registry_world
    enrol(service, gallery_id, clerk, "SEN-1", [[1.0] * DIM], {"family_name": "Diallo"})
    other_registry = service.principal("registry", "MLI")
    for headers, reference_id in ((other_registry, "SEN-1"), (clerk, "SEN-2")):
        refused = history(service, gallery_id, headers, reference_id)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert history(service, gallery_id + 1, clerk).status_code == 404
    assert history(service, gallery_id, service.principal("consular", "SEN")).status_code == 403
    assert history(service, gallery_id, service.principal("border_police", "FRA", "FRA-DCPAF")).status_code == 403


def test_an_erased_record_keeps_digests_and_a_tombstone_and_a_new_enrolment_goes_on_numbering(registry_world):
    service, gallery_id, (clerk, clerk_id), (supervisor, supervisor_id) = registry_world
    templates = [[0.5] * DIM]
    enrol(service, gallery_id, clerk, "SEN-1", templates, {"family_name": "Diallo"})
    enrol(service, gallery_id, clerk, "SEN-1", templates, {"family_name": "Diallo", "place_of_birth": "Kaolack"})
    deleted = service.client.delete(f"/v1/galleries/{gallery_id}/records/SEN-1", headers=supervisor)
    assert deleted.status_code == 204

    body = history(service, gallery_id, clerk).json()
    assert body["version"] is None
    assert [(v["version"], v["change"], v["changed_by"]["id"]) for v in body["versions"]] == [
        (3, "erased", supervisor_id),
        (2, "updated", clerk_id),
        (1, "enrolled", clerk_id),
    ]
    assert [v["attributes"] for v in body["versions"]] == [None, None, None], "erasure takes every version's attributes"
    assert [v["template_digest"] for v in body["versions"]] == [None, digest(templates), digest(templates)]
    assert "Kaolack" not in history(service, gallery_id, service.admin).text

    enrol(service, gallery_id, clerk, "SEN-1", [[0.25] * DIM], {"family_name": "Diallo"})
    body = history(service, gallery_id, clerk).json()
    assert body["version"] == 4
    assert [(v["version"], v["change"]) for v in body["versions"]][:2] == [(4, "enrolled"), (3, "erased")]
    assert body["versions"][0]["attributes"] == {"family_name": "Diallo"}


@pytest.fixture
def searchable(service):
    """A SEN face gallery of 40 people, an agreement with FRA, a FRA border police key."""
    gallery_id = service.gallery("SEN", dimension=DIM)
    registry = service.principal("registry", "SEN")
    people = np.random.default_rng(5).standard_normal((40, DIM)).astype(np.float32)
    batch = [
        {"reference_id": f"SEN-{i:04d}", "templates": [people[i].tolist()], "attributes": {"family_name": f"Diop{i}"}}
        for i in range(40)
    ]
    assert (
        service.client.post(
            f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry
        ).json()["inserted"]
        == 40
    )
    service.client.post(
        "/v1/agreements",
        headers=service.admin,
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    ).raise_for_status()
    return service, gallery_id, registry, people, service.principal("border_police", "FRA", "FRA-DCPAF")


def identify(service, police, person_template, case_ref):
    case = service.client.post("/v1/cases", headers=police, json=case_body(case_ref, 3)).json()
    response = service.client.post(
        f"/v1/cases/{case['id']}/identifications", headers=police, json=identification_body(person_template + 0.05)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_candidate_pins_the_version_it_matched_and_shows_when_the_record_changed_since(searchable):
    service, gallery_id, registry, people, police = searchable
    found = identify(service, police, people[7], "DCPAF-HIST-1")
    top = found["candidates"][0]
    assert (top["reference_id"], top["record_version"], top["record_changed_since"]) == ("SEN-0007", 1, False)

    def seen_by_police():
        search = service.client.get(f"/v1/searches/{found['id']}", headers=police).json()
        return next(
            (c["record_version"], c["record_changed_since"]) for c in search["candidates"] if c["id"] == top["id"]
        )

    def seen_by_consul(consul):
        queue = service.client.get("/v1/review/candidates?state=pending", headers=consul).json()
        return next((c["record_version"], c["record_changed_since"]) for c in queue if c["id"] == top["id"])

    consul = service.principal("consular", "SEN")
    assert seen_by_police() == seen_by_consul(consul) == (1, False)

    enrol(service, gallery_id, registry, "SEN-0007", [people[7].tolist()], {"family_name": "Diop7", "alias": "Ndeye"})
    assert seen_by_police() == seen_by_consul(consul) == (1, True), "the record is at version 2 now"
    again = identify(service, police, people[7], "DCPAF-HIST-2")["candidates"][0]
    assert (again["reference_id"], again["record_version"], again["record_changed_since"]) == ("SEN-0007", 2, False)

    assert service.client.delete(f"/v1/galleries/{gallery_id}/records/SEN-0007", headers=registry).status_code == 204
    assert seen_by_police() == (1, True), "an erased record has changed too"
