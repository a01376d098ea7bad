"""The service on the Ray backend (READMIT_MATCHER_BACKEND=ray): the same candidates as the
in-process backend on the same database, snapshots per shard across a restart, and a clear
``shard_unavailable`` while a killed shard is being restored.

Slow (a local Ray instance): ``pytest -m slow`` runs these alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from matcher import read_manifest  # noqa: E402
from tests.app.test_identification import identify, open_case, searchable_sen_gallery  # noqa: E402
from tests.harness import Service  # noqa: E402

pytestmark = pytest.mark.slow

RAY = {"matcher_backend": "ray", "ray_address": "local", "ray_shards": 3, "ray_cpus_per_shard": 0.25}


@pytest.fixture
def ray_service(tmp_path: Path):
    service = Service(tmp_path / "data", None, **RAY)
    yield service
    service.close()
    ray.shutdown()


def candidates(service: Service, police: dict, case_id: int, probes) -> list[tuple[str, float, str]]:
    response = identify(service, police, case_id, probes, max_candidates=20)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done", response.json()
    return [(c["reference_id"], c["score"], c["band"]) for c in response.json()["candidates"]]


def test_ray_backend_gives_the_in_process_candidates_and_survives_a_restart(ray_service: Service, people) -> None:
    service = ray_service
    gallery, police, case = searchable(service, people)
    registry = service.principal("registry", "SEN")
    deleted = service.client.delete(f"/v1/galleries/{gallery}/records/SEN-0007", headers=registry)
    assert deleted.status_code == 204, deleted.text
    probes = [people.mated_probes[i] for i in range(5)] + [people.nonmated_probes[0]]

    on_ray = [candidates(service, police, case["id"], probe) for probe in probes]
    assert on_ray[0][0][0] == f"SEN-{int(people.mated_ids[0]):04d}"
    assert [state.templates for state in service.runtime.registry.get(gallery).health()] != [0, 0, 0]
    assert all("SEN-0007" not in [c[0] for c in found] for found in on_ray)

    service.restart()  # shards reload their snapshots, sealed like the in-process one's
    assert service.runtime.registry.load_events[-1]["source"] == "snapshot"
    shard_files = sorted(service.settings.index_dir.glob(f"gallery-{gallery}.snapshot.shard-*-of-3"))
    assert len(shard_files) == 3 and all(read_manifest(path)["encryption"] for path in shard_files)
    assert [candidates(service, police, case["id"], probe) for probe in probes] == on_ray

    service.close()
    ray.shutdown()
    local = Service(service.settings.data_dir, None)  # the in-process backend, same database
    try:
        assert [candidates(local, police, case["id"], probe) for probe in probes] == on_ray
    finally:
        local.close()
    service.client = service._start()  # for the fixture's close


def searchable(service: Service, people) -> tuple[int, dict, dict]:
    """An enrolled SEN gallery that FRA's border police may search, and an open case."""
    gallery, police = searchable_sen_gallery(service, people)
    return gallery, police, open_case(service, police, countries=("SEN",))


def test_search_while_a_shard_is_restored_fails_with_shard_unavailable(ray_service: Service, people) -> None:
    service = ray_service
    gallery, police, case = searchable(service, people)
    before = candidates(service, police, case["id"], people.mated_probes[1])

    index = service.runtime.registry.get(gallery)
    ray.kill(ray.get_actor(index.health()[2].name, namespace="readmit"), no_restart=False)
    outcomes = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        search = identify(service, police, case["id"], people.mated_probes[1], max_candidates=20).json()
        while search["status"] in ("queued", "running"):  # a call to a restarting actor waits for it
            time.sleep(0.1)
            search = service.client.get(f"/v1/searches/{search['id']}", headers=police).json()
        outcomes.append(search["status"])
        if outcomes[-1] == "failed":
            assert search["error"] == "shard_unavailable"
        if outcomes[-1] == "done" and "failed" in outcomes:
            break
        time.sleep(0.2)
    assert "failed" in outcomes, "the search never saw the shard down"
    assert outcomes[-1] == "done", "the shard never came back"
    assert candidates(service, police, case["id"], people.mated_probes[1]) == before


def test_partial_results_only_on_request_and_naming_the_missing_shard(ray_service: Service, people) -> None:
    service = ray_service
    gallery, police, case = searchable(service, people)
    before = set(candidates(service, police, case["id"], people.mated_probes[2]))
    index = service.runtime.registry.get(gallery)
    ray.kill(ray.get_actor(index.health()[1].name, namespace="readmit"), no_restart=True)  # gone for good

    strict = identify(service, police, case["id"], people.mated_probes[2], max_candidates=20).json()
    assert (strict["status"], strict["error"], strict["missing_shards"]) == ("failed", "shard_unavailable", [])

    partial = identify(
        service, police, case["id"], people.mated_probes[2], max_candidates=20, allow_partial_results=True
    ).json()
    assert partial["status"] == "done"
    assert partial["missing_shards"] == [{"gallery_id": gallery, "shards": [1]}]
    assert {(c["reference_id"], c["score"], c["band"]) for c in partial["candidates"]} <= before
    polled = service.client.get(f"/v1/searches/{partial['id']}", headers=police).json()
    assert polled["missing_shards"] == partial["missing_shards"]
