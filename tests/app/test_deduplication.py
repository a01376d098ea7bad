"""Gallery deduplication through the API and the command line: the people enrolled twice are
found and clustered, only the gallery's country and the admin see a job, and an interrupted
offline run resumes to the pairs of a run never interrupted."""

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.deduplication import worker, workflow
from tests.harness import Service

DIM = 512


def enrol_with_duplicates(service, people, registry):
    """Every person of ``people`` under SEN-i, and again: 12 of them under DUP-i (a fresh
    sample), the first of those a third time under TRI-i (its other enrolled sample, slightly
    noisy). Returns the gallery and the planted clusters."""
    gallery = service.gallery("SEN", dimension=DIM)
    ids = np.unique(people.gallery_ids)
    records = [
        {"reference_id": f"SEN-{i:04d}", "templates": people.gallery[people.gallery_ids == i][:1].tolist()} for i in ids
    ]
    twins = people.mated_ids[:12]
    records += [
        {"reference_id": f"DUP-{i:04d}", "templates": [people.mated_probes[k].tolist()]} for k, i in enumerate(twins)
    ]
    third = people.gallery[people.gallery_ids == twins[0]][1]
    third = third + np.random.default_rng(1).normal(0, 0.01, DIM).astype(np.float32)
    records.append({"reference_id": f"TRI-{twins[0]:04d}", "templates": [third.tolist()]})
    response = service.client.post(
        f"/v1/galleries/{gallery}/records:batch", json={"records": records}, headers=registry
    )
    assert response.json()["inserted"] == len(records), response.text
    clusters = [sorted([f"SEN-{i:04d}", f"DUP-{i:04d}"]) for i in twins[1:]]
    clusters.append(sorted([f"SEN-{twins[0]:04d}", f"DUP-{twins[0]:04d}", f"TRI-{twins[0]:04d}"]))
    return gallery, sorted(clusters)


def finished(service, headers, job_id, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while True:
        job = service.client.get(f"/v1/deduplication/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_duplicates_are_found_and_clustered_through_the_api(service, people):
    registry = service.principal("registry", "SEN")
    gallery, planted = enrol_with_duplicates(service, people, registry)

    started = service.client.post(f"/v1/galleries/{gallery}/deduplication", json={}, headers=registry)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"
    job = finished(service, registry, started.json()["id"])

    assert job["status"] == "done", job
    assert job["progress"]["blocks_done"] == job["progress"]["blocks_total"] >= 1
    assert job["expected_false_pairs"] == pytest.approx(1.0, rel=0.01), "default: one false pair in the gallery"
    assert job["threshold"] >= job["possible_threshold"]
    assert all(cluster in job["clusters"] for cluster in planted), job["clusters"]
    planted_pairs = {(a, b) for cluster in planted for a in cluster for b in cluster if a != b}
    false_matches = [
        p
        for p in job["pairs"]
        if p["band"] == "match" and (p["reference_id_a"], p["reference_id_b"]) not in planted_pairs
    ]
    assert len(false_matches) <= 3, f"about one false pair expected in the match band: {false_matches}"
    pairs = {(p["reference_id_a"], p["reference_id_b"]) for p in job["pairs"]}
    assert len(pairs) == len(job["pairs"]), "each pair once"
    assert all(p["band"] in ("match", "possible") for p in job["pairs"])
    assert job["pairs"] == sorted(job["pairs"], key=lambda p: -p["score"])

    admin_view = service.client.get(f"/v1/deduplication/{job['id']}", headers=service.admin)
    assert admin_view.status_code == 200 and admin_view.json()["clusters"] == job["clusters"]
    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    actions = [e["action"] for e in events]
    assert {"deduplication.start", "deduplication.finish", "deduplication.read"} <= set(actions)


def test_another_country_sees_no_job_and_cannot_start_one(service, people):
    registry = service.principal("registry", "SEN")
    gallery = service.gallery("SEN", dimension=DIM)
    job = service.client.post(f"/v1/galleries/{gallery}/deduplication", json={"target_fmr": 1e-6}, headers=registry)
    assert job.status_code == 202
    other = service.principal("registry", "MLI")
    assert service.client.get(f"/v1/deduplication/{job.json()['id']}", headers=other).status_code == 404
    assert service.client.post(f"/v1/galleries/{gallery}/deduplication", json={}, headers=other).status_code == 404
    assert service.client.get("/v1/deduplication/999999", headers=registry).status_code == 404
    refused = service.client.post(f"/v1/galleries/{gallery}/deduplication", json={"target_fmr": 0}, headers=registry)
    assert refused.status_code == 422


@pytest.mark.parametrize("body", [{"max_pairs": True}, {"target_fmr": True}], ids=["max_pairs", "target_fmr"])
def test_a_boolean_is_not_a_number_of_pairs_or_a_rate(service, body):
    """Found by the schema fuzzer: ``true`` was taken for 1 and a job queued."""
    registry = service.principal("registry", "SEN")
    gallery = service.gallery("SEN", dimension=DIM)
    refused = service.client.post(f"/v1/galleries/{gallery}/deduplication", json=body, headers=registry)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"


def counting(scan: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    """``scan`` counting its calls in ``calls``: how many blocks a run scanned."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return scan(*args, **kwargs)

    return counted


def test_a_job_resumes_after_a_restart_from_its_checkpoint(tmp_path, database_url, people, monkeypatch):
    """The job stops after its third block (blocks of 40 rows here); the restarted service goes
    on from there and ends with the pairs of a job never interrupted."""
    monkeypatch.setattr(worker, "deduplicate", partial(workflow.deduplicate, block_rows=40))
    scan, calls = workflow.scan_block, []

    def stop_at_the_fourth_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise worker.Stopping("the service stops")
        return scan(*args, **kwargs)

    monkeypatch.setattr(workflow, "scan_block", stop_at_the_fourth_block)
    service = Service(tmp_path / "data", database_url)
    try:
        registry = service.principal("registry", "SEN")
        gallery, planted = enrol_with_duplicates(service, people, registry)
        job_id = service.client.post(f"/v1/galleries/{gallery}/deduplication", json={}, headers=registry).json()["id"]
        deadline = time.monotonic() + 30
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupted = service.client.get(f"/v1/deduplication/{job_id}", headers=registry).json()
        assert (interrupted["status"], interrupted["progress"]["blocks_done"]) == ("running", 3)
        after: list[int] = []
        monkeypatch.setattr(workflow, "scan_block", counting(scan, after))
        service.restart()
        job = finished(service, registry, job_id)
        assert job["status"] == "done" and job["progress"]["blocks_done"] == job["progress"]["blocks_total"]
        assert len(after) == job["progress"]["blocks_total"] - 3, "the restarted job scanned the blocks left only"
        again = service.client.post(f"/v1/galleries/{gallery}/deduplication", json={}, headers=registry).json()
        whole = finished(service, registry, again["id"])
        assert job["pairs"] == whole["pairs"] and job["clusters"] == whole["clusters"]
        assert all(cluster in job["clusters"] for cluster in planted)
    finally:
        service.close()


def dedup_cli(*arguments):
    return CliRunner().invoke(cli, ["dedup", *arguments], catch_exceptions=True)


def test_the_command_line_finds_them_and_resumes_to_the_same_pairs(tmp_path, database_url, people, monkeypatch):
    service = Service(tmp_path / "data", database_url)
    gallery, planted = enrol_with_duplicates(service, people, service.principal("registry", "SEN"))
    service.close()
    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path / "data"))
    if database_url:
        monkeypatch.setenv("READMIT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        scan, whole, scanned_whole = workflow.scan_block, tmp_path / "whole.jsonl", []
        monkeypatch.setattr(workflow, "scan_block", counting(scan, scanned_whole))
        result = dedup_cli("--gallery", str(gallery), "--target-fmr", "1e-7", "--out", str(whole), "--block-rows", "40")
        assert result.exit_code == 0, result.output
        *pair_lines, last = whole.read_text().splitlines()
        summary = json.loads(last)["summary"]
        assert all(cluster in summary["clusters"] for cluster in planted)
        assert summary["target_fmr"] == 1e-7 and summary["pairs"] == len(pair_lines)

        calls = []

        def power_cut(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("power cut")
            return scan(*args, **kwargs)

        resumed = tmp_path / "resumed.jsonl"
        arguments = ["--gallery", str(gallery), "--target-fmr", "1e-7", "--out", str(resumed), "--block-rows", "40"]
        monkeypatch.setattr(workflow, "scan_block", power_cut)
        assert dedup_cli(*arguments).exit_code != 0
        assert (tmp_path / "resumed.jsonl.state").exists()
        blocks_before = json.loads((tmp_path / "resumed.jsonl.state").read_text())["blocks_done"]
        assert blocks_before == 3
        scanned_after: list[int] = []
        monkeypatch.setattr(workflow, "scan_block", counting(scan, scanned_after))
        result = dedup_cli(*arguments)
        assert result.exit_code == 0, result.output
        assert len(scanned_after) == len(scanned_whole) - 3, "the resumed run scanned the blocks left only"
        assert resumed.read_text() == whole.read_text(), "the same pairs, in the same order, as one run"
        assert not (tmp_path / "resumed.jsonl.state").exists()
    finally:
        get_settings.cache_clear()
