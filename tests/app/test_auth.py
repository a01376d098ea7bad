"""Authentication, roles and scopes on every endpoint the foundation serves."""

import time

import pytest

from app.principals.service import cached_principal
from tests.harness import case_body, identification_body, records

ROLES = {
    "registry": ("registry", "SEN", None),
    "other_registry": ("registry", "MLI", None),
    "border_police": ("border_police", "FRA", "FRA-DCPAF"),
    "consular": ("consular", "SEN", None),
    "auditor": ("auditor", None, None),
}


@pytest.fixture
def world(service):
    gallery_id = service.gallery("SEN")
    keys = {name: service.principal(*spec) for name, spec in ROLES.items()}
    keys["admin"] = service.admin
    service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": records(1)}, headers=keys["registry"]
    )
    return service, gallery_id, keys


def calls(gallery_id):
    batch = {"records": records(1, prefix="X")}
    return {
        ("POST", "/v1/principals", "admin"): {"name": "n", "role": "auditor"},
        ("GET", "/v1/principals", "admin"): None,
        ("POST", "/v1/agreements", "admin"): {
            "receiving_country": "FRA",
            "origin_country": "SEN",
            "modalities": ["face"],
            "valid_from": "2026-01-01",
        },
        ("GET", "/v1/agreements", "admin"): None,
        ("POST", "/v1/galleries", "admin"): {
            "country": "MLI",
            "modality": "face",
            "template_format": {"model": "m", "dimension": 8},
        },
        ("GET", f"/v1/galleries/{gallery_id}", "admin registry"): None,
        ("POST", f"/v1/galleries/{gallery_id}/records:batch", "registry"): batch,
        ("GET", f"/v1/galleries/{gallery_id}/records/REF-00000", "registry consular"): None,
        ("GET", "/v1/audit/events", "auditor"): None,
        ("GET", "/v1/audit/verify", "auditor"): None,
    }


def test_every_role_outside_an_endpoint_gets_403(world):
    service, gallery_id, keys = world
    for (method, path, allowed), body in calls(gallery_id).items():
        for role in ("admin", "registry", "border_police", "consular", "auditor"):
            if role in allowed.split():
                continue
            response = service.client.request(method, path, json=body, headers=keys[role])
            assert response.status_code == 403, (method, path, role, response.text)
            assert response.json()["error"]["code"] == "forbidden"


def test_allowed_roles_succeed(world):
    service, gallery_id, keys = world
    for (method, path, allowed), body in calls(gallery_id).items():
        role = allowed.split()[0]
        response = service.client.request(method, path, json=body, headers=keys[role])
        assert response.status_code in (200, 201), (method, path, response.text)


def test_another_countrys_registry_sees_404_not_403(world):
    service, gallery_id, keys = world
    other = keys["other_registry"]
    for method, path in [
        ("GET", f"/v1/galleries/{gallery_id}"),
        ("GET", f"/v1/galleries/{gallery_id}/records/REF-00000"),
        ("DELETE", f"/v1/galleries/{gallery_id}/records/REF-00000"),
    ]:
        response = service.client.request(method, path, headers=other)
        assert response.status_code == 404, (path, response.text)
    response = service.client.post(
        f"/v1/galleries/{gallery_id}/records:batch", json={"records": records(1, prefix="EVIL")}, headers=other
    )
    assert response.status_code == 404
    assert service.client.get(f"/v1/galleries/{gallery_id}", headers=keys["registry"]).json()["record_count"] == 1
    assert service.client.get("/v1/galleries", headers=other).json() == []


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Bearer rdm_000000000000_wrong", "Basic abc"])
def test_missing_or_unknown_keys_get_401(service, header):
    headers = {"Authorization": header} if header else {}
    response = service.client.get("/v1/agreements", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_revocation_takes_effect_on_the_next_request(service):
    created = service.client.post(
        "/v1/principals", headers=service.admin, json={"name": "temp", "role": "auditor"}
    ).json()
    key = {"Authorization": f"Bearer {created['api_key']}"}
    assert service.client.get("/v1/audit/verify", headers=key).status_code == 200
    cached = cached_principal(service.runtime.keys, created["api_key"])
    assert cached is not None and cached.id == created["id"], "a checked key is served from the cache of keys"
    assert service.client.delete(f"/v1/principals/{created['id']}", headers=service.admin).status_code == 204
    assert cached_principal(service.runtime.keys, created["api_key"]) is None, "revocation empties the cache"
    assert service.client.get("/v1/audit/verify", headers=key).status_code == 401
    listed = service.client.get("/v1/principals", headers=service.admin).json()
    assert all("api_key" not in p and "key_hash" not in p for p in listed)


def test_principal_scopes_are_required(service):
    for body, code in [
        ({"name": "r", "role": "registry"}, "missing_country"),
        ({"name": "b", "role": "border_police", "country": "FRA"}, "missing_agency"),
        ({"name": "x", "role": "wizard"}, "validation_error"),
    ]:
        response = service.client.post("/v1/principals", headers=service.admin, json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == code


def test_unknown_routes_and_methods_use_the_error_shape(service):
    missing = service.client.get("/v1/nothing-here", headers=service.admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = service.client.put("/v1/agreements", headers=service.admin)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_health_and_docs(service):
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": True,
        "migrations": True,
        "indexes": True,
    }
    schema = service.client.get("/openapi.json").json()
    assert "/v1/galleries/{gallery_id}/records:batch" in schema["paths"]


def test_per_principal_rate_limit_answers_429_with_retry_after(tmp_path, database_url):
    from tests.harness import Service

    limited = Service(tmp_path / "limited", database_url, requests_per_minute=5)
    try:
        statuses = [limited.client.get("/v1/agreements", headers=limited.admin).status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        refused = limited.client.get("/v1/agreements", headers=limited.admin)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    finally:
        limited.close()


def test_failed_authentications_throttle_the_address(tmp_path, database_url):
    from tests.harness import Service

    throttled = Service(tmp_path / "throttled", database_url, failed_auth_per_minute=3)
    try:
        wrong = {"Authorization": "Bearer rdm_000000000000_guess"}
        assert [throttled.client.get("/v1/agreements", headers=wrong).status_code for _ in range(3)] == [401] * 3
        blocked = throttled.client.get("/v1/agreements", headers=throttled.admin)
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "too_many_failed_authentications"
        assert "retry-after" in blocked.headers
    finally:
        throttled.close()


def test_messages_failing_their_signature_throttle_the_address_as_failed_keys_do(tmp_path, database_url):
    """A node's federation endpoints authenticate by signature, not by key: a sender whose
    messages keep failing it is throttled all the same, before its bodies are read."""
    from app.core.config import Settings
    from app.federation.node import create_node
    from tests.harness import Service

    create_node(Settings(data_dir=tmp_path / "node").node_key_path, "SEN", "SEN node")
    throttled = Service(tmp_path / "node", database_url, failed_auth_per_minute=3)
    try:
        unsigned = {"content": b'{"request_id": "x"}', "headers": {"content-type": "application/json"}}
        answers = [throttled.client.post("/v1/federation/searches", **unsigned) for _ in range(4)]
        assert [a.status_code for a in answers[:3]] == [401] * 3
        assert answers[0].json()["error"]["code"] == "invalid_signature"
        assert answers[3].status_code == 429
        assert answers[3].json()["error"]["code"] == "too_many_failed_authentications"
    finally:
        throttled.close()


def test_a_key_revoked_through_another_node_is_refused_here_once_its_commit_is_told(nodes, database_url):
    """Two nodes on one PostgreSQL: the revoking transaction notifies the other node, which
    empties its cache of keys then, long before its entries would age out."""
    if database_url is None:
        pytest.skip("only PostgreSQL tells other processes of a commit")
    a, b = nodes
    b.runtime.keys.ttl_s = 600
    created = a.client.post("/v1/principals", headers=a.admin, json={"name": "temp", "role": "auditor"}).json()
    key = {"Authorization": f"Bearer {created['api_key']}"}
    assert b.client.get("/v1/audit/verify", headers=key).status_code == 200
    assert cached_principal(b.runtime.keys, created["api_key"]) is not None
    assert a.client.delete(f"/v1/principals/{created['id']}", headers=a.admin).status_code == 204
    deadline = time.monotonic() + 10
    while cached_principal(b.runtime.keys, created["api_key"]) is not None:
        assert time.monotonic() < deadline, "node B never learnt of the revocation"
        time.sleep(0.01)
    assert b.client.get("/v1/audit/verify", headers=key).status_code == 401


def test_another_agency_cannot_tell_which_searches_exist(service):
    """Outside the caller's scope a search is answered exactly as one that does not exist: no
    case id, no difference between the two."""
    gallery = service.gallery("SEN")
    service.client.post(
        "/v1/agreements",
        headers=service.admin,
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    )
    registry = service.principal("registry", "SEN")
    batch = records(5)
    service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    case = service.client.post("/v1/cases", headers=police, json=case_body("C-1")).json()
    search = service.client.post(
        f"/v1/cases/{case['id']}/identifications", headers=police, json=identification_body(batch[0]["templates"][0])
    ).json()
    other = service.principal("border_police", "DEU", "DEU-BPOL")
    existing = service.client.get(f"/v1/searches/{search['id']}", headers=other)
    missing = service.client.get(f"/v1/searches/{search['id'] + 1000}", headers=other)
    assert existing.status_code == missing.status_code == 404
    assert existing.json()["error"]["message"] == f"search {search['id']} not found"
    assert missing.json()["error"]["message"] == f"search {search['id'] + 1000} not found"
