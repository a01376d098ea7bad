"""Faults: the server is killed (SIGKILL) in the middle of bulk enrolment, and right after a
burst of searches was accepted. After a restart every acknowledged record is there exactly once,
every batch in flight is whole or absent, the index agrees with the database, every accepted
search ends, and the audit chain verifies."""

import threading
import time

import httpx
import numpy as np

from tests.harness import ServerProcess, case_body, identification_body, metric

DIM = 32
BATCH = 100


def test_sigkill_during_bulk_enrolment_loses_nothing_acknowledged(tmp_path):
    # Rate limits high: the check reads back a dozen records of every batch sent, over a thousand
    # reads in a few seconds, and a 429 must not pass for a lost record (nor hide one).
    server = ServerProcess(tmp_path / "data", READMIT_METRICS_TOKEN="scrape", READMIT_REQUESTS_PER_MINUTE="1000000")
    base, admin = server.base, server.admin
    gallery = httpx.post(
        f"{base}/v1/galleries",
        headers=admin,
        json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": DIM}},
    ).json()["id"]
    registry = server.principal("registry", "SEN")
    auditor = server.principal("auditor")
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
    server.kill()
    stop.set()
    writer.join()
    assert len(acknowledged) >= 3, "the kill came too early to test anything"

    server.start()
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            sample = range(0, BATCH, 9)
            statuses = {
                number: [
                    client.get(f"/v1/galleries/{gallery}/records/B{number:04d}-{i:03d}", headers=registry).status_code
                    for i in sample
                ]
                for number in sent
            }
            assert {code for codes in statuses.values() for code in codes} <= {200, 404}
            present = {number: codes.count(200) for number, codes in statuses.items()}
            for number in acknowledged:
                assert present[number] == len(sample), f"acknowledged batch {number} lost records"
            for number in set(sent) - set(acknowledged):
                assert present[number] in (0, len(sample)), f"batch {number} in flight is partly stored"
            stored_batches = sum(1 for count in present.values() if count == len(sample))
            counts = client.get(f"/v1/galleries/{gallery}", headers=admin).json()
            assert counts["record_count"] == stored_batches * BATCH
            assert counts["template_count"] == 2 * counts["record_count"]
            metrics = client.get("/metrics", headers={"Authorization": "Bearer scrape"}).text
            indexed = metric(metrics, "readmit_index_templates", gallery=str(gallery), kind="exact")
            assert indexed == counts["template_count"], "the index holds exactly what the database holds"
            assert 'readmit_index_loads_total{source="rebuilt"} 1.0' in metrics, "the stale snapshot was rebuilt"
            assert client.get("/v1/audit/verify", headers=auditor).json()["ok"] is True
            print(  # the figures for the report (pytest -rP)
                f"SIGKILL during enrolment: {len(sent)} batches of {BATCH} sent, {len(acknowledged)} acknowledged, "
                f"{stored_batches} stored whole, {len(sent) * len(sample)} records checked, "
                f"{counts['record_count']} records in database and index, 0 lost"
            )
    finally:
        server.stop()


def test_sigkill_during_a_search_burst_resumes_every_accepted_search(tmp_path):
    server = ServerProcess(tmp_path / "data")
    base, admin = server.base, server.admin
    registry = server.principal("registry", "SEN")
    police = server.principal("border_police", "FRA", "FRA-X")
    people = np.random.default_rng(1).standard_normal((200, DIM)).astype(np.float32)
    with httpx.Client(base_url=base, timeout=10) as client:
        gallery = client.post(
            "/v1/galleries",
            headers=admin,
            json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": DIM}},
        ).json()["id"]
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
        client.post(
            f"/v1/galleries/{gallery}/records:batch",
            headers=registry,
            json={"records": [{"reference_id": f"P{i:03d}", "templates": [people[i].tolist()]} for i in range(200)]},
        )
        case = client.post(
            "/v1/cases",
            headers=police,
            json=case_body("BURST"),
        ).json()["id"]
        accepted = {}
        for i in range(40):
            response = client.post(
                f"/v1/cases/{case}/identifications",
                headers=police,
                json=identification_body(people[i], model="m", wait_ms=0),
            )
            assert response.status_code in (200, 202)
            accepted[response.json()["id"]] = i
    server.kill()

    server.start()
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
            print(f"SIGKILL after a burst: {len(accepted)} searches accepted, {len(results)} done after restart")
    finally:
        server.stop()
