"""Property-based fuzzing of the whole API from its own OpenAPI schema (Schemathesis), with
inputs that fit the schema and inputs that break it, as each of the five roles: every check
Schemathesis has must pass, so the schema is a contract a generated client can trust. Among
them: no 5xx; every status is one the operation declares, with the declared content type and
body; schema-valid requests are accepted and schema-invalid ones refused; and, in the stateful
phase, chains of calls that feed one answer's ids into the next request (links Schemathesis
infers from the schema) behave the same way.

Hypothesis and Schemathesis write nothing into the checkout: no example database, and
Hypothesis's caches go to a temporary folder."""

import tomllib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup

from tests.app.test_authorization_matrix import World
from tests.harness import Service

ROLES = ("admin", "registry", "police", "consular", "auditor")
KEYS: dict[str, dict[str, str]] = {}  # filled by the fixture: the world's keys
CALLS: dict[int, int] = {}  # status code -> calls, for the report
EXAMPLES = 10  # per operation and role; the whole module stays well under two minutes on 2 vCPUs
STATEFUL_SCENARIOS = 25  # per role
STATEFUL_STEPS = 6

# The repository's schemathesis.toml (what a `schemathesis run` from the checkout uses too: the
# statuses a schema-valid request may get where a rule depends on time, state or two fields),
# with this run's size and both kinds of data.
CONFIG = tomllib.loads((Path(__file__).resolve().parents[2] / "schemathesis.toml").read_text())
CONFIG["generation"].update({"mode": "all", "max-examples": EXAMPLES})
CONFIG["phases"] = {"stateful": {"max-steps": STATEFUL_STEPS}}


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
    load_all_checks()
    service = Service(  # limits high: the fuzzer is to reach the handlers, not the throttles (tested apart)
        tmp_path_factory.mktemp("fuzz") / "data", None, requests_per_minute=100_000, failed_auth_per_minute=100_000
    )
    world = World(service)
    loaded = schemathesis.openapi.from_asgi(
        "/openapi.json", already_started(service.client.app), config=schemathesis.Config.from_dict(CONFIG)
    )
    checks = loaded.config.checks_config_for()
    assert all(checks.get_by_name(name=name).enabled for name in CHECKS.get_all_names())  # all 14 of them
    KEYS.update(world.keys)
    yield loaded
    service.close()
    print(f"fuzzing: {sum(CALLS.values())} calls, by status {dict(sorted(CALLS.items()))}")  # pytest -rP


schema = schemathesis.pytest.from_fixture("api")


def revokes_a_world_key(role: str, method: str, path: str) -> bool:
    """An admin revoking the world's keys would leave the rest of the run unauthenticated."""
    return role == "admin" and method == "DELETE" and path == "/v1/principals/{principal_id}"


def as_role(case, role: str) -> dict[str, str]:
    """The case's headers with the role's key in place of the generated one. A case generated
    without the header (a negative case: the required header left out) stays without it."""
    headers = dict(case.headers or {})
    if any(name.lower() == "authorization" for name in headers):
        headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        headers.update(KEYS[role])
    return headers


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_check_as_every_role(case):
    for role in ROLES:
        if revokes_a_world_key(role, case.method, case.path):
            continue
        response = case.call_and_validate(headers=as_role(case, role))
        CALLS[response.status_code] = CALLS.get(response.status_code, 0) + 1


@pytest.mark.parametrize("role", ROLES)
def test_stateful_as_every_role(api, role):
    failures: list[FailureGroup] = []

    class AsRole(api.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):
            return {"headers": as_role(case, role)}

        def step(self, input):
            if revokes_a_world_key(role, input.case.method, input.case.path):
                input.case.path_parameters = {"principal_id": 2**63 - 1}  # an id no principal has: 404
            try:
                output = super().step(input)
            except FailureGroup as failure:
                failures.append(failure)
                raise
            CALLS[output.response.status_code] = CALLS.get(output.response.status_code, 0) + 1
            return output

    try:
        AsRole.run(
            settings=settings(
                max_examples=STATEFUL_SCENARIOS,
                stateful_step_count=STATEFUL_STEPS,
                # generation only, as Schemathesis runs it: no replay to shrink a failing scenario
                phases=[Phase.generate],
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    except Flaky:
        # The service keeps its state from one scenario to the next, so the same choices can meet
        # other answers (an id that was 200 is now 404), which Hypothesis reports as flaky data
        # generation. Schemathesis's own runner counts that as no failure; so do we, unless a check
        # failed on the way, which is then the failure to report.
        if failures:
            raise failures[0] from None
