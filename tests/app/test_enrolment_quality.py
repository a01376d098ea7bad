"""Enrolment sample quality through HTTP: a registry sends a quality per template, reads it back on
the record and in its history (other qualities make a new version), a wrong quality refuses only
its record, a configured minimum refuses records whose every template is below it, and the border
police and the consul see the enrolment qualities of the record version a candidate matched."""

import base64
import re

import numpy as np
import pytest

from tests.harness import Service, case_body, identification_body

DIM = 64


@pytest.fixture
def registry(tmp_path, database_url):
    """A SEN face gallery under READMIT_MIN_ENROLMENT_QUALITY {"face": 40, "finger": 20}."""
    service = Service(tmp_path / "data", database_url, min_enrolment_quality={"face": 40, "finger": 20})
    try:
        yield service, service.gallery("SEN", dimension=DIM), service.principal("registry", "SEN")
    finally:
        service.close()


def templates(seed, count=1):
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def enrol(service, gallery_id, headers, *records):
    response = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": list(records)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def record(reference_id, samples, qualities=None, **attributes):
    body = {"reference_id": reference_id, "templates": samples.tolist(), "attributes": attributes}
    return body if qualities is None else {**body, "qualities": qualities}


def test_qualities_are_kept_with_the_record_and_other_qualities_make_a_new_version(registry):
    service, gallery_id, headers = registry
    samples = templates(1, 2)
    answer = enrol(service, gallery_id, headers, record("SEN-1", samples, [81, None], family_name="Diallo"))
    assert (answer["inserted"], answer["errors"]) == (1, [])
    read = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-1", headers=headers).json()
    assert read["qualities"] == [81, None] and read["version"] == 1

    same = enrol(service, gallery_id, headers, record("SEN-1", samples, [81.0, None], family_name="Diallo"))
    assert (same["unchanged"], same["updated"]) == (1, 0), "the same qualities again are no change"
    rescored = enrol(service, gallery_id, headers, record("SEN-1", samples, [81, 64.5], family_name="Diallo"))
    assert rescored["updated"] == 1, "the same templates with another quality are a new version"
    unscored = enrol(service, gallery_id, headers, record("SEN-1", samples, family_name="Diallo"))
    assert unscored["updated"] == 1, "qualities withdrawn: a new version too"

    history = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-1/history", headers=headers).json()
    assert [(v["version"], v["qualities"]) for v in history["versions"]] == [
        (3, None),
        (2, [81, 64.5]),
        (1, [81, None]),
    ]
    assert len({v["template_digest"] for v in history["versions"]}) == 1, "the digest stays over the templates"

    assert service.client.delete(f"/v1/galleries/{gallery_id}/records/SEN-1", headers=headers).status_code == 204
    erased = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-1/history", headers=headers).json()
    assert [v["qualities"] for v in erased["versions"]] == [None] * 4, "an erasure takes the qualities too"


def test_base64_templates_take_qualities_too(registry):
    service, gallery_id, headers = registry
    samples = templates(2, 2)
    encoded = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in samples]
    body = {"reference_id": "SEN-B64", "templates_b64": encoded, "qualities": [55, 70]}
    assert enrol(service, gallery_id, headers, body)["inserted"] == 1
    read = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-B64", headers=headers).json()
    assert (read["qualities"], read["template_count"]) == ([55, 70], 2)


def test_a_wrong_quality_refuses_its_record_and_the_others_are_stored(registry):
    service, gallery_id, headers = registry
    answer = enrol(
        service,
        gallery_id,
        headers,
        record("SEN-SHORT", templates(3, 2), [70]),
        record("SEN-HIGH", templates(4), [100.5]),
        record("SEN-NEGATIVE", templates(5), [-1]),
        record("SEN-GOOD", templates(6), [100]),
        record("SEN-NONE", templates(7)),
    )
    assert answer["inserted"] == 2
    assert [(e["index"], e["reference_id"], e["code"]) for e in answer["errors"]] == [
        (0, "SEN-SHORT", "invalid_quality"),
        (1, "SEN-HIGH", "invalid_quality"),
        (2, "SEN-NEGATIVE", "invalid_quality"),
    ]
    assert answer["errors"][0]["message"] == "1 qualities given for 2 templates: give one each, null where unknown"
    assert "0-100" in answer["errors"][1]["message"]
    for refused in ("SEN-SHORT", "SEN-HIGH", "SEN-NEGATIVE"):
        assert service.client.get(f"/v1/galleries/{gallery_id}/records/{refused}", headers=headers).status_code == 404

    as_text = {"records": [{**record("SEN-TEXT", templates(8)), "qualities": ["70"]}]}
    response = service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json=as_text, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def test_a_record_whose_every_template_is_below_the_minimum_is_refused(registry):
    service, gallery_id, headers = registry
    answer = enrol(
        service,
        gallery_id,
        headers,
        record("SEN-POOR", templates(9, 2), [12, 39.5]),
        record("SEN-ONE-GOOD", templates(10, 2), [12, 40]),
        record("SEN-UNKNOWN", templates(11, 2), [12, None]),
    )
    assert answer["inserted"] == 2
    assert [(e["index"], e["reference_id"], e["code"]) for e in answer["errors"]] == [(0, "SEN-POOR", "low_quality")]
    assert answer["errors"][0]["message"] == (
        "every template is below the minimum enrolment quality 40 of its modality (qualities 12, 39.5): "
        "capture better samples"
    )
    kept = service.client.get(f"/v1/galleries/{gallery_id}/records/SEN-ONE-GOOD", headers=headers).json()
    assert kept["qualities"] == [12, 40], "a record keeps its poor templates beside a good one"


@pytest.fixture
def searchable(registry):
    """40 people enrolled with a quality per template, a FRA-SEN agreement, a FRA border police key."""
    service, gallery_id, headers = registry
    people = templates(12, 40)
    batch = [record(f"SEN-{i:04d}", people[i : i + 1], [50 + i]) for i in range(40)]
    assert enrol(service, gallery_id, headers, *batch)["inserted"] == 40
    service.client.post(
        "/v1/agreements",
        headers=service.admin,
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    ).raise_for_status()
    return service, gallery_id, headers, people, service.principal("border_police", "FRA", "FRA-DCPAF")


def sign_in(service, consul):
    form = service.client.get("/review/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    key = consul["Authorization"].removeprefix("Bearer ")
    assert service.client.post("/review/sign-in", data={"api_key": key, "csrf": csrf.group(1)}).status_code == 200


def test_the_candidate_shows_the_enrolment_qualities_of_the_version_it_matched(searchable):
    service, gallery_id, headers, people, police = searchable
    case = service.client.post("/v1/cases", headers=police, json=case_body("DCPAF-EQ-1", 2)).json()
    body = identification_body(people[7] + 0.05, qualities=[66])
    found = service.client.post(f"/v1/cases/{case['id']}/identifications", headers=police, json=body).json()
    top = found["candidates"][0]
    assert top["reference_id"] == "SEN-0007"
    matched = [{"modality": "face", "index": 0, "quality": 57}]
    assert top["enrolment_qualities"] == matched

    # the registry captures a better sample of the same person: the candidate keeps what it matched
    enrol(service, gallery_id, headers, record("SEN-0007", people[7:8], [93]))
    search = service.client.get(f"/v1/searches/{found['id']}", headers=police).json()
    assert [(c["enrolment_qualities"], c["record_changed_since"]) for c in search["candidates"][:1]] == [
        (matched, True)
    ]
    consul = service.principal("consular", "SEN")
    queue = service.client.get("/v1/review/candidates?state=pending", headers=consul).json()
    item = next(c for c in queue if c["id"] == top["id"])
    assert item["enrolment_qualities"] == matched
    assert item["probe_qualities"] == [{"modality": "face", "index": 0, "quality": 66}]

    sign_in(service, consul)
    page = service.client.get(f"/review/candidates/{top['id']}").text
    assert re.search(r"<dt>Probe quality</dt><dd>face sample 1: 66/100</dd>", page)
    assert re.search(r"<dt>Enrolment quality</dt><dd>face sample 1: 57/100", page)


def test_a_candidate_of_a_record_enrolled_without_qualities_says_so(searchable):
    service, gallery_id, headers, people, police = searchable
    enrol(service, gallery_id, headers, record("SEN-0003", people[3:4]))
    case = service.client.post("/v1/cases", headers=police, json=case_body("DCPAF-EQ-2", 2)).json()
    body = identification_body(people[3] + 0.05)
    top = service.client.post(f"/v1/cases/{case['id']}/identifications", headers=police, json=body).json()
    assert (top["candidates"][0]["reference_id"], top["candidates"][0]["enrolment_qualities"]) == ("SEN-0003", [])
    consul = service.principal("consular", "SEN")
    sign_in(service, consul)
    page = service.client.get(f"/review/candidates/{top['candidates'][0]['id']}").text
    assert "<dt>Enrolment quality</dt><dd>not given</dd>" in page
