"""Multi-modal identification and probe quality, through HTTP as a border police system uses them:
face and fingerprints fused per person, a person enrolled by face only still found, poor probe
samples dropped or refused, and a queued multi-modal search resumed after a restart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from matcher.synthetic import FaceModel, SyntheticSet, make_linked_sets
from tests.harness import Service, case_body, settled

FACE, FINGER = FaceModel(dimension=128), FaceModel(dimension=96, spread_median=1.0, spectrum_decay=0.3)
PEOPLE, BOTH = 240, 180
"""People 0..179 are enrolled by face and fingerprints, 180..239 by face only."""


@pytest.fixture(scope="module")
def linked() -> list[SyntheticSet]:
    return make_linked_sets(PEOPLE, [FACE, FINGER], mated_probes=PEOPLE, nonmated_probes=4, seed=5)


@pytest.fixture
def registry_of_two_modalities(tmp_path, database_url, linked) -> Iterator[tuple[Service, dict[str, str]]]:
    """SEN's face and finger galleries (linked by reference id) under a FRA-SEN agreement covering
    both; READMIT_MIN_PROBE_QUALITY {"face": 30, "finger": 20}."""
    service = Service(tmp_path / "data", database_url, min_probe_quality={"face": 30, "finger": 20})
    try:
        registry = service.principal("registry", "SEN")
        for (modality, model, people), data in zip(
            [("face", "arcface-r100", PEOPLE), ("finger", "mcc-96", BOTH)], linked, strict=True
        ):
            gallery = service.gallery("SEN", modality=modality, dimension=data.gallery.shape[1], model=model)
            records = [
                {"reference_id": f"SEN-{i:04d}", "templates": [data.gallery[i].tolist()], "attributes": {"n": str(i)}}
                for i in range(people)
            ]
            answer = service.client.post(
                f"/v1/galleries/{gallery}/records:batch", json={"records": records}, headers=registry
            )
            assert answer.json()["inserted"] == people, answer.text
        agreement = {
            "receiving_country": "FRA",
            "origin_country": "SEN",
            "modalities": ["face", "finger"],
            "valid_from": "2020-01-01",
        }
        assert service.client.post("/v1/agreements", headers=service.admin, json=agreement).status_code == 201
        yield service, service.principal("border_police", "FRA", "FRA-DCPAF")
    finally:
        service.close()


def probe(data: SyntheticSet, person: int) -> list[list[float]]:
    """A fresh sample of ``person`` (every person is in ``mated_ids``, in order)."""
    return [data.mated_probes[int(np.searchsorted(data.mated_ids, person))].tolist()]


def modalities(linked: list[SyntheticSet], person: int, **qualities: list[float | None]) -> list[dict[str, Any]]:
    return [
        {
            "modality": modality,
            "template_format": {"model": model, "dimension": data.gallery.shape[1]},
            "probes": probe(data, person),
            **({"qualities": qualities[modality]} if modality in qualities else {}),
        }
        for (modality, model), data in zip([("face", "arcface-r100"), ("finger", "mcc-96")], linked, strict=True)
    ]


def open_case(service: Service, police: dict[str, str], ref: str = "DCPAF-MM-1") -> int:
    answer = service.client.post("/v1/cases", headers=police, json=case_body(ref, days_ago=1))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def identify(service: Service, police: dict[str, str], case_id: int, body: dict[str, Any]) -> Any:
    return service.client.post(f"/v1/cases/{case_id}/identifications", headers=police, json=body)


def test_a_two_modality_search_ranks_the_person_first_with_what_each_modality_said(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    answer = identify(service, police, case_id, {"modalities": modalities(linked, 7)})
    assert answer.status_code == 200, answer.text
    search = answer.json()
    assert [m["modality"] for m in search["modalities"]] == ["face", "finger"]
    best = search["candidates"][0]
    assert best["reference_id"] == "SEN-0007" and best["band"] == "match"
    said = {m["modality"]: m for m in best["modalities"]}
    assert set(said) == {"face", "finger"}
    assert all(0 < m["tail_probability"] < 0.05 for m in said.values())
    assert said["face"]["band_alone"] == "match"  # the weaker finger model alone says less
    # the fused score is the evidence of both modalities: more than either alone
    assert best["score"] == pytest.approx(sum(-np.log(m["tail_probability"]) for m in said.values()), rel=1e-6)
    assert best["gallery_id"] in {m["gallery_id"] for m in said.values()}
    assert len({c["reference_id"] for c in search["candidates"]}) == len(search["candidates"])  # one line a person
    # read back as the border police poll it, the same candidates
    polled = service.client.get(f"/v1/searches/{search['id']}", headers=police).json()
    assert [(c["reference_id"], c["modalities"]) for c in polled["candidates"]] == [
        (c["reference_id"], c["modalities"]) for c in search["candidates"]
    ]


def test_a_person_enrolled_by_face_only_is_found_on_the_face(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    person = BOTH + 5  # no fingerprint record: the finger probe finds strangers only
    search = identify(service, police, case_id, {"modalities": modalities(linked, person)}).json()
    best = search["candidates"][0]
    assert best["reference_id"] == f"SEN-{person:04d}"
    assert [m["modality"] for m in best["modalities"]] == ["face"]


def test_a_stranger_in_both_modalities_gets_no_match(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    stranger = [
        {**entry, "probes": [data.nonmated_probes[0].tolist()]}
        for entry, data in zip(modalities(linked, 0), linked, strict=True)
    ]
    search = identify(service, police, case_id, {"modalities": stranger}).json()
    assert search["status"] == "done"
    assert all(c["band"] != "match" for c in search["candidates"])


def test_the_single_modality_form_answers_as_before(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    [face] = modalities(linked, 3)[:1]
    search = identify(service, police, case_id, face).json()
    assert search["modalities"] is None and search["dropped_samples"] == [] and search["probe_qualities"] == []
    assert search["candidates"][0]["reference_id"] == "SEN-0003"
    assert search["candidates"][0]["modalities"] is None
    assert search["candidates"][0]["score"] < 1  # a cosine, not a fused score


def test_one_form_or_the_other_each_modality_once(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    both = {**modalities(linked, 3)[0], "modalities": modalities(linked, 3)}
    twice = {"modalities": modalities(linked, 3)[:1] * 2}
    for body in (both, twice, {"countries": ["SEN"]}):
        answer = identify(service, police, case_id, body)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "validation_error", answer.text


def test_a_probe_whose_every_sample_is_below_the_minimum_is_refused_naming_them(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    face = modalities(linked, 3)[0]
    body = {**face, "probes": face["probes"] * 2, "qualities": [12, 29.5]}
    answer = identify(service, police, case_id, body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "low_quality"
    assert error["details"]["samples"] == [
        {"modality": "face", "index": 0, "quality": 12, "minimum": 30},
        {"modality": "face", "index": 1, "quality": 29.5, "minimum": 30},
    ]
    wrong_count = identify(service, police, case_id, {**face, "qualities": [50, 60]})
    assert wrong_count.status_code == 422 and wrong_count.json()["error"]["code"] == "invalid_quality"


def test_a_low_sample_of_a_multi_sample_probe_is_dropped_and_the_answer_says_so(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    face = modalities(linked, 4)[0]
    stranger = linked[0].nonmated_probes[1].tolist()
    body = {**face, "probes": [stranger, *face["probes"]], "qualities": [10, 85]}
    search = identify(service, police, case_id, body).json()
    assert search["dropped_samples"] == [{"modality": "face", "index": 0, "quality": 10, "minimum": 30}]
    assert search["probe_qualities"] == [{"modality": "face", "index": 1, "quality": 85}]
    assert search["candidates"][0]["reference_id"] == "SEN-0004"
    # the consul reviewing the candidate sees the probe's quality
    consul = service.principal("consular", "SEN")
    queue = service.client.get("/v1/review/candidates?state=pending", headers=consul).json()
    item = next(c for c in queue if c["search_id"] == search["id"])
    assert item["probe_qualities"] == [{"modality": "face", "index": 1, "quality": 85}]


def test_unusable_fingerprints_leave_the_face_searched(registry_of_two_modalities, linked):
    """As the Eurodac recast falls back to the face: a modality whose every sample is below its
    minimum is dropped, the others searched."""
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    body = {"modalities": modalities(linked, 9, face=[70], finger=[5])}
    search = identify(service, police, case_id, body).json()
    assert [m["modality"] for m in search["modalities"]] == ["face"]
    assert search["dropped_samples"] == [{"modality": "finger", "index": 0, "quality": 5, "minimum": 20}]
    assert search["candidates"][0]["reference_id"] == "SEN-0009"
    none_left = identify(service, police, case_id, {"modalities": modalities(linked, 9, face=[1], finger=[5])})
    assert none_left.status_code == 422 and none_left.json()["error"]["code"] == "low_quality"
    assert len(none_left.json()["error"]["details"]["samples"]) == 2


def test_a_queued_multi_modal_search_survives_a_restart(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    service.runtime.scheduler.pause()
    queued = identify(service, police, case_id, {"modalities": modalities(linked, 11), "wait_ms": 0})
    assert queued.status_code == 202, queued.text
    service.restart(graceful=False)
    result = settled(service.client, police, queued.json()["id"])
    assert result["status"] == "done"
    assert result["candidates"][0]["reference_id"] == "SEN-0011"
    assert {m["modality"] for m in result["candidates"][0]["modalities"]} == {"face", "finger"}


def test_the_review_page_shows_each_modality_and_the_probe_qualities(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    case_id = open_case(service, police)
    body = {"modalities": modalities(linked, 13, face=[64], finger=[None])}
    candidate = identify(service, police, case_id, body).json()["candidates"][0]
    consul = service.principal("consular", "SEN")
    client = service.client
    form = client.get("/review/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    key = consul["Authorization"].removeprefix("Bearer ")
    assert client.post("/review/sign-in", data={"api_key": key, "csrf": csrf.group(1)}).status_code == 200
    page = client.get(f"/review/candidates/{candidate['id']}").text
    assert "face sample 1: 64/100" in page
    assert "Scores per modality" in page and "<td>finger</td>" in page and "<td>face</td>" in page


def test_a_fused_candidate_shows_each_modality_records_enrolment_qualities(registry_of_two_modalities, linked):
    service, police = registry_of_two_modalities
    registry = service.principal("registry", "SEN")
    galleries = service.client.get("/v1/galleries", headers=registry).json()
    for (modality, quality), data in zip((("face", 71), ("finger", 18)), linked, strict=True):
        gallery_id = next(g["id"] for g in galleries if g["modality"] == modality)
        record = {"reference_id": "SEN-0015", "templates": [data.gallery[15].tolist()], "qualities": [quality]}
        answer = service.client.post(
            f"/v1/galleries/{gallery_id}/records:batch", json={"records": [record]}, headers=registry
        )
        assert answer.json()["updated"] == 1, answer.text
    candidate = identify(service, police, open_case(service, police), {"modalities": modalities(linked, 15)}).json()[
        "candidates"
    ][0]
    assert candidate["reference_id"] == "SEN-0015"
    assert sorted(candidate["enrolment_qualities"], key=lambda q: q["modality"]) == [
        {"modality": "face", "index": 0, "quality": 71},
        {"modality": "finger", "index": 0, "quality": 18},
    ]
