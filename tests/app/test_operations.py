"""Operators' tools: bulk enrolment (resumable), index and audit commands, metrics, JSON logs."""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.observability.logging import JsonFormatter
from app.observability.metrics import Metrics
from tests.harness import Service, records

DIM = 32


@pytest.fixture
def offline(tmp_path, monkeypatch, database_url):
    """A data folder with a gallery and a registry principal, the service stopped."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("READMIT_DATA_DIR", str(data_dir))
    if database_url:
        monkeypatch.setenv("READMIT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    service = Service(data_dir, database_url)
    gallery_id = service.gallery("SEN", dimension=DIM)
    registry = service.client.post(
        "/v1/principals", headers=service.admin, json={"name": "registry", "role": "registry", "country": "SEN"}
    ).json()
    service.close()
    yield {
        "data_dir": data_dir,
        "gallery": gallery_id,
        "registry": registry["id"],
        "url": database_url,
        "env": {
            **os.environ,
            "READMIT_DATA_DIR": str(data_dir),
            **({"READMIT_DATABASE_URL": database_url} if database_url else {}),
        },
    }
    get_settings.cache_clear()


def write_source(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((count, 2, DIM)).astype(np.float32)
    templates[7] = 0.0  # one bad record: zero vectors
    np.save(folder / "templates.npy", templates)
    with open(folder / "records.csv", "w") as out:
        out.write("reference_id,family_name\n")
        for i in range(count):
            out.write(f"SEN-{i:06d},Name{i}\n")
    return templates


def enrol_args(offline, tmp_path, batch=500):
    return [
        "enrol",
        "--gallery",
        str(offline["gallery"]),
        "--as",
        str(offline["registry"]),
        "--templates",
        str(tmp_path / "templates.npy"),
        "--records",
        str(tmp_path / "records.csv"),
        "--batch",
        str(batch),
        "--report",
        str(tmp_path / "report.jsonl"),
    ]


def count_records(offline):
    service = Service(offline["data_dir"], offline["url"])
    try:
        gallery = service.client.get(f"/v1/galleries/{offline['gallery']}", headers=service.admin).json()
        return gallery, service.runtime.registry.load_events
    finally:
        service.close()


def test_enrol_loads_a_gallery_reports_rejects_and_is_idempotent(offline, tmp_path):
    write_source(tmp_path, 3000)
    result = CliRunner().invoke(cli, enrol_args(offline, tmp_path))
    assert result.exit_code == 0, result.output
    assert "inserted 2999, updated 0, unchanged 0, rejected 1" in result.output
    report = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert report[0]["reference_id"] == "SEN-000007" and report[0]["code"] == "invalid_template"
    assert report[-1]["summary"]["inserted"] == 2999
    again = CliRunner().invoke(cli, enrol_args(offline, tmp_path))
    assert "inserted 0, updated 0, unchanged 2999, rejected 1" in again.output
    gallery, loads = count_records(offline)
    assert (gallery["record_count"], gallery["template_count"]) == (2999, 5998)
    assert loads[0]["source"] == "snapshot", "enrol leaves a current snapshot behind"


@pytest.mark.parametrize("rows", [9, 11])
def test_enrol_refuses_files_of_different_lengths_before_storing_anything(offline, tmp_path, rows):
    """A CSV shorter or longer than the templates is most likely the wrong file: refused whole,
    not enrolled up to where the difference shows."""
    write_source(tmp_path, 10)
    lines = (tmp_path / "records.csv").read_text().splitlines()
    extra = [f"SEN-{i:06d},Name{i}" for i in range(10, rows)]
    (tmp_path / "records.csv").write_text("\n".join([*lines[: rows + 1], *extra]) + "\n")
    result = CliRunner().invoke(cli, enrol_args(offline, tmp_path))
    assert result.exit_code == 1
    assert f"has 10 rows but {tmp_path / 'records.csv'} has {rows}" in result.output
    gallery, _ = count_records(offline)
    assert gallery["record_count"] == 0


def read_qualities(offline, reference_ids):
    """The qualities of records as the registry reads them through HTTP once the service is back."""
    service = Service(offline["data_dir"], offline["url"])
    try:
        registry = service.principal("registry", "SEN")
        url = f"/v1/galleries/{offline['gallery']}/records/"
        return {ref: service.client.get(url + ref, headers=registry).json().get("qualities") for ref in reference_ids}
    finally:
        service.close()


def test_enrol_takes_qualities_from_a_parallel_npy_and_from_json_lines(offline, tmp_path):
    write_source(tmp_path, 20)
    qualities = np.full((20, 2), np.nan)
    qualities[0], qualities[1, 1], qualities[2] = (45, 80), 12.5, (101, 50)
    np.save(tmp_path / "qualities.npy", qualities)
    paired = CliRunner().invoke(cli, [*enrol_args(offline, tmp_path), "--qualities", str(tmp_path / "qualities.npy")])
    assert paired.exit_code == 0, paired.output
    assert "inserted 18, updated 0, unchanged 0, rejected 2" in paired.output
    report = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()[:-1]]
    assert [(r["reference_id"], r["code"]) for r in report] == [
        ("SEN-000002", "invalid_quality"),
        ("SEN-000007", "invalid_template"),
    ]

    inline = tmp_path / "inline.jsonl"
    inline.write_text(
        json.dumps({"reference_id": "SEN-000003", "templates": [[0.5] * DIM], "qualities": [77]})
        + "\n"
        + json.dumps({"reference_id": "SEN-900000", "templates": [[0.25] * DIM, [0.75] * DIM]})
        + "\n"
    )
    jsonl = CliRunner().invoke(
        cli,
        [
            *("enrol", "--gallery", str(offline["gallery"]), "--as", str(offline["registry"])),
            *("--jsonl", str(inline), "--report", str(tmp_path / "report.jsonl")),
        ],
    )
    assert jsonl.exit_code == 0, jsonl.output
    assert "inserted 1, updated 1" in jsonl.output
    assert read_qualities(offline, ["SEN-000000", "SEN-000001", "SEN-000003", "SEN-000004", "SEN-900000"]) == {
        "SEN-000000": [45, 80],
        "SEN-000001": [None, 12.5],
        "SEN-000003": [77],
        "SEN-000004": None,
        "SEN-900000": None,
    }

    np.save(tmp_path / "short.npy", qualities[:5])
    mismatched = CliRunner().invoke(cli, [*enrol_args(offline, tmp_path), "--qualities", str(tmp_path / "short.npy")])
    assert mismatched.exit_code == 1 and "one row of qualities per template row" in mismatched.output


def test_an_interrupted_enrol_resumes_with_every_record_once(offline, tmp_path):
    write_source(tmp_path, 6000, seed=1)
    command = [sys.executable, "-m", "app", *enrol_args(offline, tmp_path, batch=200)]
    process = subprocess.Popen(command, env=offline["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = subprocess.run(command, env=offline["env"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads((tmp_path / "report.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["inserted"] + summary["unchanged"] == 5999 and summary["updated"] == 0
    gallery, _ = count_records(offline)
    assert (gallery["record_count"], gallery["template_count"]) == (5999, 11998)


def test_enrol_refuses_while_the_service_runs_and_explains(offline, tmp_path):
    write_source(tmp_path, 10)
    service = Service(offline["data_dir"], offline["url"])
    try:
        result = CliRunner().invoke(cli, enrol_args(offline, tmp_path))
        assert result.exit_code == 1
        assert "another readmit process is using the data folder" in result.output
    finally:
        service.close()


def test_index_commands_and_audit_export_verified_independently(offline, tmp_path):
    write_source(tmp_path, 50)
    assert CliRunner().invoke(cli, enrol_args(offline, tmp_path)).exit_code == 0
    rebuilt = CliRunner().invoke(cli, ["index", "rebuild", "--kind", "exact"])
    assert rebuilt.exit_code == 0 and "98 templates, exact" in rebuilt.output
    snapshot = CliRunner().invoke(cli, ["index", "snapshot"])
    assert "snapshot" in snapshot.output
    assert "audit chain intact" in CliRunner().invoke(cli, ["audit", "verify"]).output

    export = tmp_path / "audit.jsonl"
    assert CliRunner().invoke(cli, ["audit", "export", "--out", str(export)]).exit_code == 0
    events = [json.loads(line) for line in export.read_text().splitlines()]
    previous = "0" * 64
    for event in events:  # the documented recipe, without readmit's code
        body = {k: event[k] for k in ("seq", "at", "principal_id", "role", "action", "resource", "outcome", "details")}
        body["prev_hash"] = previous
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert hashlib.sha256(canonical.encode()).hexdigest() == event["hash"], event["seq"]
        previous = event["hash"]
    assert len(events) >= 3


def test_metrics_after_traffic_need_an_admin_key(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": records(4)}, headers=registry)
    again = [*records(3), {"reference_id": "BAD", "templates": [[0.0] * 64]}]  # three unchanged, one rejected
    service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": again}, headers=registry)
    assert service.client.get("/metrics").status_code == 401
    assert service.client.get("/metrics", headers=registry).status_code == 403
    text = service.client.get("/metrics", headers=service.admin).text
    assert (
        'readmit_http_requests_total{method="POST",route="/v1/galleries/{gallery_id}/records:batch",status="200"} 2.0'
        in text
    )
    assert f'readmit_index_templates{{gallery="{gallery_id}",kind="exact"}} 8.0' in text
    assert f'readmit_index_shards{{gallery="{gallery_id}"}} 1.0' in text  # in process: one shard, always up
    assert f'readmit_index_shards_unavailable{{gallery="{gallery_id}"}} 0.0' in text
    for change, count in (("inserted", 4), ("unchanged", 3), ("rejected", 1), ("updated", 0)):
        assert f'readmit_enrolled_records_total{{change="{change}",gallery="{gallery_id}"}} {count}.0' in text
    assert "readmit_search_queue_depth 0.0" in text


def test_request_ids_and_logs_without_biometric_data(service, caplog):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    batch = records(2)
    with caplog.at_level(logging.INFO):
        response = service.client.post(
            f"/v1/galleries/{gallery_id}/records:batch",
            json={"records": batch},
            headers={**registry, "X-Request-ID": "client-req-000123"},
        )
        service.client.get(f"/v1/galleries/{gallery_id}/records/REF-00001", headers=registry)
    assert response.headers["x-request-id"] == "client-req-000123"
    lines = [JsonFormatter().format(record) for record in caplog.records]
    access = [json.loads(line) for line in lines if '"message": "request"' in line]
    assert access[0]["request_id"] == "client-req-000123" and access[0]["status"] == 200
    assert access[0]["route"] == "/v1/galleries/{gallery_id}/records:batch" and access[0]["principal_id"]
    everything = "\n".join(lines)
    template_value = str(batch[0]["templates"][0][0])
    assert template_value not in everything and "Name1" not in everything and "templates" not in everything


def test_a_scrape_while_a_process_creates_its_metrics_file_merges_the_others(tmp_path, monkeypatch):
    """A process that starts (a passes child, a new worker) creates its metrics file empty, then
    sizes it: a scrape in between failed with a 500 and showed nothing of the live processes."""
    written = MmapedDict(str(tmp_path / "gauge_livesum_101.db"))
    written.write_value(mmap_key("readmit_x", "readmit_x", [], [], "a gauge"), 3.0, 0.0)
    written.close()
    (tmp_path / "gauge_livesum_102.db").touch()  # as the starting process has just created it
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr("app.observability.metrics.alive", lambda pid: True)
    assert "readmit_x 3.0" in Metrics().exposition().decode()
