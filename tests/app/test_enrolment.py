import base64
import json

import numpy as np
import pytest

from tests.harness import records


@pytest.fixture
def enrolled(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    batch = records(5)
    response = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 5, "updated": 0, "unchanged": 0, "errors": []}
    return service, gallery_id, registry, batch


def search_top(service, gallery_id, template):
    result = service.runtime.registry.get(gallery_id).search(np.asarray([template]), k=1)
    return int(result.record_ids[0, 0]), float(result.scores[0, 0])


def test_enrol_read_delete_cycle(enrolled):
    service, gallery_id, registry, batch = enrolled
    record = service.client.get(f"/v1/galleries/{gallery_id}/records/REF-00002", headers=registry)
    assert record.status_code == 200
    body = record.json()
    assert body["attributes"]["family_name"] == "Name2" and body["template_count"] == body["sample_count"] == 2
    assert "templates" not in body and "vector" not in record.text

    gallery = service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()
    assert (gallery["record_count"], gallery["template_count"], gallery["index_kind"]) == (5, 10, "exact")

    record_id, score = search_top(service, gallery_id, batch[2]["templates"][1])
    assert score == pytest.approx(1.0, abs=1e-5)

    assert service.client.delete(f"/v1/galleries/{gallery_id}/records/REF-00002", headers=registry).status_code == 204
    gone = service.client.get(f"/v1/galleries/{gallery_id}/records/REF-00002", headers=registry)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert search_top(service, gallery_id, batch[2]["templates"][1])[0] != record_id
    assert service.runtime.registry.get(gallery_id).template_count == 8


def test_resending_the_same_batch_changes_nothing_and_a_changed_record_is_replaced(enrolled):
    service, gallery_id, registry, batch = enrolled
    url = f"/v1/galleries/{gallery_id}/records:batch"
    again = service.client.post(url, json={"records": batch}, headers=registry).json()
    assert again == {"inserted": 0, "updated": 0, "unchanged": 5, "errors": []}
    seq = service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()["change_seq"]

    changed = dict(batch[0], templates=np.random.default_rng(9).standard_normal((3, 64)).tolist())
    result = service.client.post(url, json={"records": [changed]}, headers=registry).json()
    assert result["updated"] == 1
    gallery = service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()
    assert gallery["template_count"] == 11 and gallery["change_seq"] == seq + 1
    index = service.runtime.registry.get(gallery_id)
    assert index.template_count == 11
    assert search_top(service, gallery_id, changed["templates"][2])[1] == pytest.approx(1.0, abs=1e-5)
    assert search_top(service, gallery_id, batch[0]["templates"][0])[1] < 0.9, "old samples are gone"


def test_base64_templates_are_accepted(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    vector = np.random.default_rng(1).standard_normal(64).astype("<f4")
    body = {"records": [{"reference_id": "B64", "templates_b64": [base64.b64encode(vector.tobytes()).decode()]}]}
    response = service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json=body, headers=registry)
    assert response.json()["inserted"] == 1
    assert search_top(service, gallery_id, vector)[1] == pytest.approx(1.0, abs=1e-5)


BAD_RECORDS = [
    ({"templates": [[0.1] * 63]}, "invalid_template"),
    ({"templates": [[float("nan")] + [0.1] * 63]}, "invalid_template"),
    ({"templates": [[float("inf")] + [0.1] * 63]}, "invalid_template"),
    ({"templates": [[1e39] + [0.1] * 63]}, "invalid_template"),  # finite in JSON, beyond float32
    ({"templates": [[0.0] * 64]}, "invalid_template"),
    ({"templates": []}, "invalid_template"),
    ({"templates_b64": ["not base64!"]}, "invalid_template"),
    ({"templates_b64": [base64.b64encode(b"\0" * 12).decode()]}, "invalid_template"),
    ({}, "invalid_template"),
    ({"templates": [[0.1] * 64] * 21}, "too_many_templates"),
]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # refused, with nothing on standard error
@pytest.mark.parametrize(("fields", "code"), BAD_RECORDS)
def test_a_bad_record_is_reported_and_the_good_ones_kept(enrolled, fields, code):
    service, gallery_id, registry, batch = enrolled
    before = service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()
    good = records(1, seed=5, prefix="NEW")[0]
    bad = {"reference_id": "REF-00001", **fields}  # an existing record: must stay untouched
    # NaN and Infinity are not JSON, but Python clients send them as literals: send them raw.
    response = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch",
        content=json.dumps({"records": [good, bad]}),
        headers={**registry, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["inserted"] == 1
    assert body["errors"] == [
        {"index": 1, "reference_id": "REF-00001", "code": code, "message": body["errors"][0]["message"]}
    ]
    after = service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()
    assert after["template_count"] == before["template_count"] + 2
    assert search_top(service, gallery_id, batch[1]["templates"][0])[1] == pytest.approx(1.0, abs=1e-5)


def test_duplicate_reference_inside_one_batch(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    batch = records(2)
    batch[1]["reference_id"] = batch[0]["reference_id"]
    body = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry
    ).json()
    assert body["inserted"] == 1 and body["errors"][0]["code"] == "duplicate_reference"


def test_too_many_records_and_malformed_bodies_are_refused_whole(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    url = f"/v1/galleries/{gallery_id}/records:batch"
    too_many = service.client.post(url, json={"records": records(1001, dimension=2, samples=1)}, headers=registry)
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "batch_too_large"
    strings = service.client.post(
        url, json={"records": [{"reference_id": "X", "templates": [["a"] * 64]}]}, headers=registry
    )
    assert strings.status_code == 422 and strings.json()["error"]["code"] == "validation_error"
    for body in (b"abc", b'{"records": [', b'{"records": "\xff"}'):  # not JSON, cut short, not UTF-8
        garbled = service.client.post(url, content=body, headers={**registry, "Content-Type": "application/json"})
        assert garbled.status_code == 400 and garbled.json()["error"]["code"] == "invalid_body", garbled.text
    assert service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()["record_count"] == 0


def test_oversized_body_is_refused_before_parsing(tmp_path, database_url):
    from tests.harness import Service

    small = Service(tmp_path / "small", database_url, max_body_bytes=10_000)
    try:
        gallery_id = small.gallery("SEN")
        registry = small.principal("registry", "SEN")
        response = small.client.post(
            f"/v1/galleries/{gallery_id}/records:batch", json={"records": records(50)}, headers=registry
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        body = json.dumps({"records": records(50)}).encode()
        streamed = small.client.post(  # no Content-Length: cut off as it passes the limit
            f"/v1/galleries/{gallery_id}/records:batch",
            content=(body[i : i + 4096] for i in range(0, len(body), 4096)),
            headers={**registry, "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["error"]["code"] == "payload_too_large"
    finally:
        small.close()


def test_gallery_format_fixes_dimension_and_duplicates_are_refused(service):
    service.gallery("SEN", dimension=64)
    again = service.client.post(
        "/v1/galleries",
        headers=service.admin,
        json={"country": "SEN", "modality": "face", "template_format": {"model": "arcface-r100", "dimension": 64}},
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_gallery"
    bad_country = service.client.post(
        "/v1/galleries",
        headers=service.admin,
        json={"country": "XXX", "modality": "face", "template_format": {"model": "m", "dimension": 64}},
    )
    assert bad_country.status_code == 422 and bad_country.json()["error"]["code"] == "invalid_country"


def test_unknown_galleries_and_out_of_range_ids_are_client_errors(service):
    """Found by the fuzzer: a write to a gallery that does not exist answered 503 (no index to
    lock) instead of 404, and an id past 64 bits overflowed inside the database driver (500)."""
    registry = service.principal("registry", "SEN")
    batch = {"records": records(1)}
    unknown = service.client.post("/v1/galleries/999/records:batch", json=batch, headers=registry)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_gallery")
    assert service.client.delete("/v1/galleries/999/records/X", headers=registry).status_code == 404
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    for path, caller in (
        ("/v1/galleries/9223372036854775808", service.admin),
        ("/v1/cases/9223372036854775808", police),
        ("/v1/searches/0", police),
    ):
        response = service.client.get(path, headers=caller)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "validation_error"
