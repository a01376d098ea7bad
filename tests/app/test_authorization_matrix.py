"""Every route, called as every kind of principal, answers exactly the status in this table.

A route the app serves without an entry here fails the test: whoever adds a route must decide
who may call it. Anonymous callers get 401 everywhere but the health checks; a role outside the
route gets 403; a principal of another country or agency gets 404 for resources (no existence
leak) and empty lists where it lists.
"""

import numpy as np
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from tests.harness import Service, case_body, identification_body

PRINCIPALS = {
    "admin": None,
    "registry": ("registry", "SEN", None),
    "registry_other": ("registry", "MLI", None),
    "police": ("border_police", "FRA", "FRA-DCPAF"),
    "police_other": ("border_police", "FRA", "FRA-PAF-LYON"),
    "consular": ("consular", "SEN", None),
    "consular_other": ("consular", "MLI", None),
    "auditor": ("auditor", None, None),
    "anonymous": None,
}
EXEMPT_PREFIXES = ("/docs", "/redoc", "/openapi.json", "/review", "/v1/federation")
"""Framework pages; /review has tests/web; /v1/federation takes peer nodes' signatures, not API keys
(tests/app/test_federation.py)."""
PUBLIC = ("/healthz", "/readyz", "/v1/node")
DIM = 64


class World:
    """A small but complete world: a gallery with records, an agreement, a case with a done
    identification and a pending candidate, and one key per kind of principal."""

    def __init__(self, service: Service) -> None:
        self.service = service
        rng = np.random.default_rng(3)
        self.templates = rng.standard_normal((6, DIM)).astype(np.float32)
        self.keys = {"admin": service.admin, "anonymous": {}}
        for name, spec in PRINCIPALS.items():
            if spec is not None:
                self.keys[name] = service.principal(*spec)
        self.spare_principal = service.client.post(
            "/v1/principals", headers=service.admin, json={"name": "spare", "role": "auditor"}
        ).json()["id"]
        self.gallery = service.gallery("SEN", dimension=DIM)
        records = [{"reference_id": f"REF-{i}", "templates": [self.templates[i].tolist()]} for i in range(6)]
        service.client.post(
            f"/v1/galleries/{self.gallery}/records:batch", json={"records": records}, headers=self.keys["registry"]
        )
        service.client.post("/v1/agreements", headers=service.admin, json=self.agreement())
        self.case = service.client.post("/v1/cases", headers=self.keys["police"], json=case_body("C-1")).json()["id"]
        search = service.client.post(
            f"/v1/cases/{self.case}/identifications", headers=self.keys["police"], json=self.identification()
        ).json()
        self.search = search["id"]
        self.candidate = search["candidates"][0]["id"]
        self.deduplication = service.client.post(
            f"/v1/galleries/{self.gallery}/deduplication", headers=service.admin, json={}
        ).json()["id"]
        service.runtime.passes.sequencer.checkpoint_now()  # the events so far in the audit log's tree, for its proofs

    def agreement(self) -> dict:
        return {"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"}

    def identification(self) -> dict:
        return identification_body(self.templates[0])


def table(w: World) -> list[tuple[str, str, str, object, dict[str, int]]]:
    """(method, route template, concrete path, body, expected status per principal; others 403)."""
    g, case, search, candidate = w.gallery, w.case, w.search, w.candidate
    everyone = {name: 200 for name in PRINCIPALS}
    scoped_registry = {"registry": 200, "registry_other": 404}
    own_police = {"police": 200, "police_other": 404}
    return [
        ("GET", "/healthz", "/healthz", None, everyone),
        ("GET", "/readyz", "/readyz", None, everyone),
        ("GET", "/metrics", "/metrics", None, {"admin": 200}),
        ("POST", "/v1/principals", "/v1/principals", {"name": "n", "role": "auditor"}, {"admin": 201}),
        ("GET", "/v1/principals", "/v1/principals", None, {"admin": 200}),
        ("DELETE", "/v1/principals/{principal_id}", f"/v1/principals/{w.spare_principal}", None, {"admin": 204}),
        ("POST", "/v1/agreements", "/v1/agreements", w.agreement(), {"admin": 201}),
        ("GET", "/v1/agreements", "/v1/agreements", None, {"admin": 200}),
        (
            "POST",
            "/v1/galleries",
            "/v1/galleries",
            {"country": "MAR", "modality": "face", "template_format": {"model": "m", "dimension": 8}},
            {"admin": 201},
        ),
        ("GET", "/v1/galleries", "/v1/galleries", None, {"admin": 200, "registry": 200, "registry_other": 200}),
        ("GET", "/v1/galleries/{gallery_id}", f"/v1/galleries/{g}", None, {"admin": 200, **scoped_registry}),
        (
            "POST",
            "/v1/galleries/{gallery_id}/records:batch",
            f"/v1/galleries/{g}/records:batch",
            {"records": [{"reference_id": "NEW", "templates": [w.templates[5].tolist()]}]},
            scoped_registry,
        ),
        (
            "GET",
            "/v1/galleries/{gallery_id}/records/{reference_id}",
            f"/v1/galleries/{g}/records/REF-0",
            None,
            {**scoped_registry, "consular": 200, "consular_other": 404},
        ),
        (
            "GET",
            "/v1/galleries/{gallery_id}/records/{reference_id}/history",
            f"/v1/galleries/{g}/records/REF-0/history",
            None,
            {"admin": 200, **scoped_registry},
        ),
        (
            "DELETE",
            "/v1/galleries/{gallery_id}/records/{reference_id}",
            f"/v1/galleries/{g}/records/REF-3",
            None,
            {"registry": 204, "registry_other": 404},
        ),
        (
            "POST",
            "/v1/galleries/{gallery_id}/deduplication",
            f"/v1/galleries/{g}/deduplication",
            {},
            {"admin": 202, "registry": 202, "registry_other": 404},
        ),
        (
            "GET",
            "/v1/deduplication/{job_id}",
            f"/v1/deduplication/{w.deduplication}",
            None,
            {"admin": 200, **scoped_registry},
        ),
        ("POST", "/v1/cases", "/v1/cases", case_body("C-2"), {"police": 201, "police_other": 201}),
        ("GET", "/v1/cases/{case_id}/links", f"/v1/cases/{case}/links", None, own_police),
        ("GET", "/v1/cases/{case_id}", f"/v1/cases/{case}", None, own_police),
        ("PATCH", "/v1/cases/{case_id}", f"/v1/cases/{case}", {"status": "closed"}, own_police),
        (
            "POST",
            "/v1/cases/{case_id}/identifications",
            f"/v1/cases/{case}/identifications",
            w.identification(),
            own_police,
        ),
        (
            "POST",
            "/v1/cases/{case_id}/verifications",
            f"/v1/cases/{case}/verifications",
            {"gallery_id": g, "reference_id": "REF-0", "probes": [w.templates[0].tolist()]},
            own_police,
        ),
        ("GET", "/v1/searches/{search_id}", f"/v1/searches/{search}", None, own_police),
        ("GET", "/v1/review/candidates", "/v1/review/candidates", None, {"consular": 200, "consular_other": 200}),
        (
            "POST",
            "/v1/candidates/{candidate_id}/decision",
            f"/v1/candidates/{candidate}/decision",
            {"decision": "rejected", "note": "not him"},
            {"consular": 200, "consular_other": 404},
        ),
        (
            "PUT",
            "/v1/review-policies/{country}",
            "/v1/review-policies/SEN",
            {"second_reviewer_required": True},
            {"admin": 200},
        ),
        (
            "GET",
            "/v1/review-policies/{country}",
            "/v1/review-policies/SEN",
            None,
            {"admin": 200, "consular": 200, "consular_other": 404},
        ),
        ("GET", "/v1/audit/events", "/v1/audit/events", None, {"auditor": 200}),
        ("GET", "/v1/audit/verify", "/v1/audit/verify", None, {"auditor": 200}),
        ("GET", "/v1/audit/public-key", "/v1/audit/public-key", None, {"auditor": 200}),
        ("GET", "/v1/audit/checkpoint", "/v1/audit/checkpoint", None, {"auditor": 200}),
        ("POST", "/v1/audit/checkpoint", "/v1/audit/checkpoint", None, {"auditor": 200}),
        ("GET", "/v1/audit/proof/inclusion", "/v1/audit/proof/inclusion?seq=1&tree_size=1", None, {"auditor": 200}),
        ("GET", "/v1/audit/proof/consistency", "/v1/audit/proof/consistency?from=1&to=1", None, {"auditor": 200}),
        # this node has no node key (readmit node init): its identity is not_initialised to all alike
        ("GET", "/v1/node", "/v1/node", None, dict.fromkeys(PRINCIPALS, 409)),
        ("GET", "/v1/peers", "/v1/peers", None, {"admin": 200}),
        (
            "POST",
            "/v1/peers",
            "/v1/peers",
            {"country": "SEN", "url": "https://sen.example", "public_key": "x"},
            {"admin": 409},
        ),
        ("DELETE", "/v1/peers/{peer_id}", "/v1/peers/999", None, {"admin": 404}),
    ]


@pytest.fixture
def sqlite_service(tmp_path):
    running = Service(tmp_path / "data", None)
    yield running
    running.close()


def test_every_route_has_an_entry(sqlite_service):
    world_routes = {(m, t) for m, t, *_ in table_skeleton()}
    served = {
        (method, route.path)
        for route in iter_route_contexts(sqlite_service.client.app.routes)  # through included routers
        if isinstance(route.original_route, APIRoute) and not route.path.startswith(EXEMPT_PREFIXES)
        for method in route.methods - {"HEAD"}
    }
    assert ("POST", "/v1/cases/{case_id}/identifications") in served, "the application's routes were not found"
    assert served - world_routes == set(), "routes without an entry in the authorisation table"


def table_skeleton() -> list[tuple[str, str]]:
    class Blank:
        gallery = case = search = candidate = spare_principal = deduplication = 0
        templates = np.zeros((6, DIM))
        agreement = World.agreement
        identification = World.identification

    return [(m, t) for m, t, *_ in table(Blank())]  # type: ignore[arg-type]


@pytest.mark.parametrize("entry", range(len(table_skeleton())), ids=[f"{m} {t}" for m, t in table_skeleton()])
def test_route_answers_each_principal_exactly(tmp_path, entry):
    service = Service(tmp_path / "data", None)
    try:
        world = World(service)
        method, template, path, body, expected = table(world)[entry]
        public = template in PUBLIC
        # successes last, so that a state-changing call cannot change what the others see
        for name in sorted(PRINCIPALS, key=lambda n: expected.get(n, 0) in (200, 201, 204)):
            wanted = expected.get(name, 401 if name == "anonymous" and not public else 403)
            response = service.client.request(method, path, json=body, headers=world.keys[name])
            assert response.status_code == wanted, (method, template, name, response.text)
            if wanted >= 400:
                assert response.json()["error"]["code"], response.text
    finally:
        service.close()
