"""Two service instances on one database, each with its own data folder (as two nodes): what one
commits, the other finds, within the follower's bounded delay; a start catches a snapshot up
from the change log. On PostgreSQL the follower is woken by NOTIFY, on SQLite it polls."""

import time
from collections.abc import Iterator

import pytest

from tests.harness import Service, case_body, identification_body, records

AGREEMENT = {"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"}


@pytest.fixture
def nodes(tmp_path, database_url) -> Iterator[tuple[Service, Service]]:
    """Node A and node B on one database (SQLite: one file both open), B signing the audit log
    with A's key as every node of one log does."""
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    a = Service(tmp_path / "a", url)
    b = Service(tmp_path / "b", url, audit_key_file=a.settings.audit_key_path, change_poll_s=0.1)
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def applied_everywhere(*services: Service, timeout_s: float = 10) -> None:
    """Wait until every service's follower has applied every committed change (read from the
    database), as a client retrying for the bounded delay would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_current(service) for service in services):
            return
        time.sleep(0.02)
    raise AssertionError("a follower did not catch up")


def _current(service: Service) -> bool:
    registry = service.runtime.registry
    seqs = registry.feed.seqs()
    return all(registry.is_loaded(g) and not registry.is_behind(g, seq) for g, seq in seqs.items())


def found_through(service: Service, police: dict[str, str], probe, ref: str) -> list[str]:
    """The reference ids an identification through ``service`` answers for ``probe``."""
    case = service.client.post("/v1/cases", headers=police, json=case_body(ref, countries=("SEN",)))
    assert case.status_code == 201, case.text
    response = service.client.post(
        f"/v1/cases/{case.json()['id']}/identifications", headers=police, json=identification_body(probe)
    )
    assert response.status_code == 200, response.text
    return [candidate["reference_id"] for candidate in response.json()["candidates"]]


def test_what_one_node_commits_the_other_finds(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")  # created through A: B opens its index
    a.client.post("/v1/agreements", headers=a.admin, json=AGREEMENT)
    registry = a.principal("registry", "SEN")
    police = a.principal("border_police", "FRA", "FRA-DCPAF")
    batch = records(30)
    enrolled = a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch}, headers=registry)
    assert enrolled.json()["inserted"] == 30
    applied_everywhere(b)
    assert found_through(b, police, batch[7]["templates"][0], "C-1")[0] == "REF-00007"

    deleted = a.client.delete(f"/v1/galleries/{gallery}/records/REF-00007", headers=registry)
    assert deleted.status_code == 204
    replaced = {**batch[9], "templates": records(1, seed=5)[0]["templates"]}
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": [replaced]}, headers=registry)
    applied_everywhere(b)
    assert "REF-00007" not in found_through(b, police, batch[7]["templates"][0], "C-2")
    assert "REF-00009" not in found_through(b, police, batch[9]["templates"][0], "C-3")
    assert found_through(b, police, replaced["templates"][1], "C-4")[0] == "REF-00009"

    metrics = b.client.get("/metrics", headers=b.admin).text
    assert f'readmit_index_changes_behind{{gallery="{gallery}"}} 0.0' in metrics
    (lagged,) = [line for line in metrics.splitlines() if line.startswith("readmit_index_change_lag_seconds_count")]
    assert float(lagged.split()[1]) >= 2, "the deletion and the replacement came to B through the log"


def test_a_writer_catches_up_on_the_other_nodes_changes_before_its_own(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")
    registry = a.principal("registry", "SEN")
    applied_everywhere(b)
    b.runtime.follower.stop()  # B learns of A's change only from its own next write
    first, second = records(10, seed=1, prefix="A"), records(10, seed=2, prefix="B")
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": first}, headers=registry)
    b.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": second}, headers=registry)
    assert b.runtime.registry.get(gallery).template_count == 40, "A's 10 records, then B's own"
    unchanged = b.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": first}, headers=registry)
    assert unchanged.json()["unchanged"] == 10


def test_a_node_started_with_an_old_snapshot_catches_up_from_the_log(nodes):
    a, b = nodes
    gallery = a.gallery("SEN")
    registry = a.principal("registry", "SEN")
    batch = records(20)
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch[:10]}, headers=registry)
    applied_everywhere(b)
    b.close()  # graceful: B's snapshot holds change 1
    a.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": batch[10:]}, headers=registry)
    a.client.delete(f"/v1/galleries/{gallery}/records/REF-00002", headers=registry)
    b.reopen()
    assert b.runtime.ready
    (event,) = b.runtime.registry.load_events
    assert event == {
        "gallery_id": gallery,
        "source": "caught up: changes 2 to 3 from the log",
        "templates": 38,
        "kind": "exact",
    }
    assert set(b.runtime.registry.get(gallery).record_ids().tolist()) == set(
        a.runtime.registry.get(gallery).record_ids().tolist()
    )
