"""Property-based fuzzing of the whole API from its own OpenAPI schema (Schemathesis), with
inputs that fit the schema and inputs that break it: as an admin, a registry officer and a
border police officer, no generated input may cause a 5xx, and every 4xx carries the documented
error body."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.app.test_authorization_matrix import World
from tests.harness import Service

ROLES = ("admin", "registry", "police")
KEYS: dict[str, dict[str, str]] = {}  # filled by the fixture: the world's keys
CALLS: dict[int, int] = {}  # status code -> calls, for the report


def already_started(app):
    """The running app without a second lifespan: Schemathesis's client would start one."""

    async def wrapper(scope, receive, send):
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapper


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    service = Service(  # limits high: the fuzzer is to reach the handlers, not the throttles (tested apart)
        tmp_path_factory.mktemp("fuzz") / "data", None, requests_per_minute=100_000, failed_auth_per_minute=100_000
    )
    world = World(service)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", already_started(service.client.app))
    loaded.config.generation.update(modes=list(schemathesis.GenerationMode))  # valid and invalid inputs
    KEYS.update(world.keys)
    yield loaded
    service.close()
    print(f"fuzzing: {sum(CALLS.values())} calls, by status {dict(sorted(CALLS.items()))}")  # pytest -rP


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_documented_error_shape(case):
    for role in ROLES:
        if role == "admin" and case.method == "DELETE" and case.path == "/v1/principals/{principal_id}":
            continue  # an admin revoking the world's keys would leave the rest of the run unauthenticated
        response = case.call(headers={**(case.headers or {}), **KEYS[role]})
        CALLS[response.status_code] = CALLS.get(response.status_code, 0) + 1
        assert response.status_code < 500, (role, case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"] and "message" in body["error"], response.text
