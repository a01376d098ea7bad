"""Faults: the server is killed (SIGKILL) in the middle of bulk enrolment. After a restart every
acknowledged record is there exactly once, every batch in flight is whole or absent, the index
agrees with the database, and the audit chain verifies."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from tests.app.harness import free_port

DIM = 32
BATCH = 100


def start(data_dir, port):
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir), "READMIT_METRICS_TOKEN": "scrape"}
    env.pop("READMIT_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(150):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("not ready")


def test_sigkill_during_bulk_enrolment_loses_nothing_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir)}
    env.pop("READMIT_DATABASE_URL", None)
    admin_key = (
        subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-key", "--name", "ops"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(data_dir, port)
    admin = {"Authorization": f"Bearer {admin_key}"}
    gallery = httpx.post(
        f"{base}/v1/galleries",
        headers=admin,
        json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": DIM}},
    ).json()["id"]
    registry = {
        "Authorization": "Bearer "
        + httpx.post(
            f"{base}/v1/principals", headers=admin, json={"name": "r", "role": "registry", "country": "SEN"}
        ).json()["api_key"]
    }
    auditor = {
        "Authorization": "Bearer "
        + httpx.post(f"{base}/v1/principals", headers=admin, json={"name": "a", "role": "auditor"}).json()["api_key"]
    }

    rng = np.random.default_rng(0)
    acknowledged: list[int] = []
    sent: list[int] = []
    stop = threading.Event()

    def enrol() -> None:
        number = 0
        with httpx.Client(base_url=base, headers=registry, timeout=10) as client:
            while not stop.is_set():
                records = [
                    {"reference_id": f"B{number:04d}-{i:03d}", "templates": rng.standard_normal((2, DIM)).tolist()}
                    for i in range(BATCH)
                ]
                sent.append(number)
                try:
                    response = client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records})
                except httpx.HTTPError:
                    return
                if response.status_code == 200 and response.json()["inserted"] == BATCH:
                    acknowledged.append(number)
                number += 1

    writer = threading.Thread(target=enrol)
    writer.start()
    time.sleep(2.0)
    server.send_signal(signal.SIGKILL)
    server.wait()
    stop.set()
    writer.join()
    assert len(acknowledged) >= 3, "the kill came too early to test anything"

    server = start(data_dir, port)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            present = {
                number: sum(
                    client.get(f"/v1/galleries/{gallery}/records/B{number:04d}-{i:03d}", headers=registry).status_code
                    == 200
                    for i in range(0, BATCH, 9)
                )
                for number in sent
            }
            sample = len(range(0, BATCH, 9))
            for number in acknowledged:
                assert present[number] == sample, f"acknowledged batch {number} lost records"
            for number in set(sent) - set(acknowledged):
                assert present[number] in (0, sample), f"batch {number} in flight is partly stored"
            stored_batches = sum(1 for count in present.values() if count == sample)
            counts = client.get(f"/v1/galleries/{gallery}", headers=admin).json()
            assert counts["record_count"] == stored_batches * BATCH
            assert counts["template_count"] == 2 * counts["record_count"]
            metrics = client.get("/metrics", headers={"Authorization": "Bearer scrape"}).text
            assert (
                f'readmit_index_templates{{gallery="{gallery}",kind="exact"}} {float(counts["template_count"])}'
                in metrics
            )
            assert 'readmit_index_loads_total{source="rebuilt"} 1.0' in metrics, "the stale snapshot was rebuilt"
            assert client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sigkill_during_a_search_burst_resumes_every_accepted_search(tmp_path):
    from datetime import UTC, datetime

    data_dir = tmp_path / "data"
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir)}
    env.pop("READMIT_DATABASE_URL", None)
    admin_key = (
        subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-key", "--name", "ops"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(data_dir, port)
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        gallery = client.post(
            "/v1/galleries",
            headers=admin,
            json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": DIM}},
        ).json()["id"]
        registry = {
            "Authorization": "Bearer "
            + client.post(
                "/v1/principals", headers=admin, json={"name": "r", "role": "registry", "country": "SEN"}
            ).json()["api_key"]
        }
        police = {
            "Authorization": "Bearer "
            + client.post(
                "/v1/principals",
                headers=admin,
                json={"name": "p", "role": "border_police", "country": "FRA", "agency": "FRA-X"},
            ).json()["api_key"]
        }
        client.post(
            "/v1/agreements",
            headers=admin,
            json={
                "receiving_country": "FRA",
                "origin_country": "SEN",
                "modalities": ["face"],
                "valid_from": "2020-01-01",
            },
        )
        people = np.random.default_rng(1).standard_normal((200, DIM)).astype(np.float32)
        client.post(
            f"/v1/galleries/{gallery}/records:batch",
            headers=registry,
            json={"records": [{"reference_id": f"P{i:03d}", "templates": [people[i].tolist()]} for i in range(200)]},
        )
        case = client.post(
            "/v1/cases",
            headers=police,
            json={
                "external_ref": "BURST",
                "detained_at": datetime.now(UTC).isoformat(),
                "detention_limit_days": 45,
                "presumed_countries": ["SEN"],
                "legal_basis": "consent",
            },
        ).json()["id"]
        accepted = {}
        for i in range(40):
            response = client.post(
                f"/v1/cases/{case}/identifications",
                headers=police,
                json={
                    "modality": "face",
                    "template_format": {"model": "m", "dimension": DIM},
                    "probes": [people[i].tolist()],
                    "wait_ms": 0,
                },
            )
            assert response.status_code in (200, 202)
            accepted[response.json()["id"]] = i
    server.send_signal(signal.SIGKILL)
    server.wait()

    server = start(data_dir, port)
    try:
        with httpx.Client(base_url=base, headers=police, timeout=10) as client:
            results = {}
            for _ in range(100):
                results = {s: client.get(f"/v1/searches/{s}").json() for s in accepted}
                if all(r["status"] == "done" for r in results.values()):
                    break
                time.sleep(0.1)
            assert {r["status"] for r in results.values()} == {"done"}, "every accepted search ends, after restart"
            for search_id, person in accepted.items():
                assert results[search_id]["candidates"][0]["reference_id"] == f"P{person:03d}"
    finally:
        server.terminate()
        server.wait(timeout=10)
