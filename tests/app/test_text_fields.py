"""Free text with a NUL character: refused like any other invalid field (422, the error body),
on both databases. PostgreSQL's text cannot hold NUL, and such a request was a 500 there after
validation had passed; nothing of it may be stored."""

import pytest

from app.federation.wire import FederatedCandidate
from tests.harness import case_body, records

NUL = "a\x00b"


def refused(response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


@pytest.fixture
def registry(service):
    return service.principal("registry", "SEN")


def test_a_record_with_nul_in_its_reference_or_attributes_is_refused_and_none_of_its_batch_stored(service, registry):
    gallery_id = service.gallery()
    client = service.client
    for bad in ({"reference_id": NUL}, {"attributes": {"family_name": NUL}}, {"attributes": {NUL: "x"}}):
        batch = records(2)
        batch[1].update(bad)
        refused(client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry))
    assert client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()["record_count"] == 0
    for method in ("GET", "DELETE"):
        refused(client.request(method, f"/v1/galleries/{gallery_id}/records/a%00b", headers=registry))
    refused(client.get(f"/v1/galleries/{gallery_id}/records/a%00b/history", headers=registry))


def test_names_references_and_models_with_nul_are_refused(service):
    client = service.client
    refused(
        client.post("/v1/principals", json={"name": NUL, "role": "registry", "country": "SEN"}, headers=service.admin)
    )
    body = {"country": "SEN", "modality": "face", "template_format": {"model": NUL, "dimension": 64}}
    refused(client.post("/v1/galleries", json=body, headers=service.admin))
    assert client.get("/v1/galleries", headers=service.admin).json() == []
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    refused(client.post("/v1/cases", json=case_body(NUL), headers=police))


def test_a_peer_s_url_or_message_with_nul_is_refused(service):
    peer = {"country": "SEN", "url": "https://sen.example\x00.org", "public_key": "A" * 43 + "="}
    refused(service.client.post("/v1/peers", json=peer, headers=service.admin))
    # what a peer answers is validated on receipt
    with pytest.raises(ValueError, match="pattern"):
        FederatedCandidate(id=1, reference_id=NUL, rank=1, score=0.9, band="match", review_state="pending")
