"""The Ray backend on a cluster with fewer CPUs than a gallery's shards ask for: refused within
seconds with what was needed and what the cluster has, never a request that hangs; and a local
cluster that fits the default shards to this machine's CPUs.

Slow (a local Ray instance): ``pytest -m slow`` runs these alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from app.cli import cli  # noqa: E402
from app.core.config import get_settings  # noqa: E402
from tests.app.test_identification import identify, open_case, searchable_sen_gallery  # noqa: E402
from tests.harness import Service  # noqa: E402

pytestmark = pytest.mark.slow

NOT_HANGING_S = 30
"""Far above the placement timeout the tests set (2 s), far below forever."""

GALLERY = {"country": "MLI", "modality": "face", "template_format": {"model": "arcface-r100", "dimension": 64}}


@pytest.fixture
def one_cpu_cluster() -> Iterator[None]:
    """A running cluster of one CPU that the service joins (not ``local``: nothing is fitted)."""
    ray.init(num_cpus=1, namespace="readmit", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def create_gallery(service: Service) -> tuple[float, dict]:
    """(seconds taken, response body) of an admin's gallery creation that the cluster refuses."""
    started = time.monotonic()
    response = service.client.post("/v1/galleries", json=GALLERY, headers=service.admin)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    return elapsed, response.json()


def test_a_gallery_the_cluster_cannot_place_is_refused_within_seconds(tmp_path: Path, one_cpu_cluster: None) -> None:
    service = Service(tmp_path / "data", None, matcher_backend="ray", ray_placement_timeout_s=2)  # 4 shards x 1 CPU
    try:
        elapsed, body = create_gallery(service)
        assert elapsed < NOT_HANGING_S
        assert body["error"]["code"] == "shards_unplaceable"
        assert "need 4 CPUs; the Ray cluster has 1" in body["error"]["message"]
        assert body["error"]["details"] == {
            "shards": 4,
            "cpus_per_shard": 1.0,
            "cpus_needed": 4.0,
            "cpus_total": 1.0,
            "cpus_available": 1.0,
        }
        assert service.client.get("/v1/galleries", headers=service.admin).json() == []  # nothing half-made
    finally:
        service.close()


def test_a_local_cluster_fits_the_default_shards_to_its_cpus(tmp_path: Path, people) -> None:
    service = Service(tmp_path / "data", None, matcher_backend="ray", ray_address="local", ray_placement_timeout_s=2)
    try:
        cpus = ray.cluster_resources()["CPU"]
        gallery, police = searchable_sen_gallery(service, people)
        index = service.runtime.registry.get(gallery)
        assert index.shard_count == min(4, int(cpus))
        case = open_case(service, police, countries=("SEN",))
        search = identify(service, police, case["id"], people.mated_probes[0]).json()
        assert search["status"] == "done", search
        assert search["candidates"][0]["reference_id"] == f"SEN-{int(people.mated_ids[0]):04d}"

        elapsed, body = create_gallery(service)  # the first gallery's shards hold every CPU
        assert elapsed < NOT_HANGING_S
        assert body["error"]["code"] == "shards_unplaceable"
        assert body["error"]["details"]["cpus_available"] == 0
    finally:
        service.close()
        ray.shutdown()


def test_a_stored_gallery_the_cluster_cannot_place_leaves_the_service_not_ready_and_the_cli_failing_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_shards = {"matcher_backend": "ray", "ray_shards": 2, "ray_placement_timeout_s": 2}
    service = Service(tmp_path / "data", None, ray_address="local", **two_shards)
    gallery = service.gallery("SEN")
    service.close()  # its snapshot written: two shards of one CPU
    ray.shutdown()

    ray.init(num_cpus=1, namespace="readmit", include_dashboard=False, log_to_driver=False)
    try:
        started = time.monotonic()
        service = Service(tmp_path / "data", None, **two_shards)  # start returns: the gallery is refused
        assert time.monotonic() - started < NOT_HANGING_S
        ready = service.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["indexes"] is False
        assert f"gallery {gallery} cannot be placed" in ready.json()["error"]["message"]
        service.close()

        for name, value in {"data_dir": tmp_path / "data", **two_shards}.items():
            monkeypatch.setenv(f"READMIT_{name.upper()}", str(value))
        get_settings.cache_clear()
        result = CliRunner().invoke(cli, ["index", "snapshot"])
        assert result.exit_code == 1
        assert f"gallery {gallery} cannot be placed: 2 shards of 1 CPU need 2 CPUs" in result.output
    finally:
        get_settings.cache_clear()
        ray.shutdown()
