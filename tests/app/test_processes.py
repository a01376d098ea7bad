"""``readmit serve --processes N``: several service processes behind one port, on PostgreSQL.

Real processes on loopback: the supervisor holds the data folder, every worker serves every
route, a scrape of /metrics merges all of them, and a worker killed with SIGKILL is replaced
while the others go on serving.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerProcess, free_port


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's service processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def live_pids_in_metrics(server: ServerProcess) -> set[str]:
    text = httpx.get(f"{server.base}/metrics", headers=server.admin, timeout=5).text
    return {
        line.split('pid="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("readmit_search_queue_depth{")
    }


def test_several_processes_need_postgresql(tmp_path):
    env = {**os.environ, "READMIT_DATA_DIR": str(tmp_path / "data")}
    env.pop("READMIT_DATABASE_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--processes", "2"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "several processes need PostgreSQL" in run.stderr


@pytest.fixture
def two_workers(tmp_path, database_url) -> Iterator[tuple[ServerProcess, set[int]]]:
    """``readmit serve --processes 2`` on PostgreSQL, and its two workers' pids."""
    if database_url is None:
        pytest.skip("several processes serve PostgreSQL only")
    server = ServerProcess(tmp_path / "data", database_url, processes=2)
    try:
        assert server.process is not None
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        yield server, workers
    finally:
        server.stop()


def test_a_killed_process_is_replaced_while_the_others_serve(two_workers):
    server, workers = two_workers
    assert server.process is not None
    for _ in range(100):  # ready: at least one process is; the other may still be loading
        if live_pids_in_metrics(server) == {str(pid) for pid in workers}:
            break
        time.sleep(0.1)
    assert live_pids_in_metrics(server) == {str(pid) for pid in workers}, "one scrape shows every process"

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    answered = [httpx.get(f"{server.base}/readyz", timeout=5).status_code for _ in range(20)]
    assert answered == [200] * 20, "the survivor stays ready while its sibling is replaced"

    for _ in range(300):
        now = worker_pids(server.process.pid)
        if len(now) == 2 and victim not in now and httpx.get(f"{server.base}/readyz").status_code == 200:
            break
        time.sleep(0.1)
    assert victim not in now and len(now) == 2, "the supervisor started a replacement"
    for _ in range(100):
        if live_pids_in_metrics(server) == {str(pid) for pid in now}:
            break
        time.sleep(0.1)
    assert live_pids_in_metrics(server) == {str(pid) for pid in now}, "the dead process left the metrics"


def test_workers_stop_when_their_supervisor_is_killed(two_workers):
    """SIGKILL of ``readmit serve``: its workers stop too, rather than serve on, unguarded,
    under the init process, and a new ``readmit serve`` can take the port and the folder."""
    server, workers = two_workers
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 60
    while any(
        Path(f"/proc/{pid}").exists() and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in workers
    ):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.1)
    server.start()
    assert httpx.get(f"{server.base}/readyz", timeout=5).status_code == 200


def test_every_process_logs_its_requests_as_json_lines(tmp_path, database_url):
    """The processes uvicorn starts are new interpreters: the supervisor's logging never reached
    them, and a node of several processes logged no request at all (and warnings as bare text)."""
    if database_url is None:
        pytest.skip("several processes serve PostgreSQL only")
    log = tmp_path / "service.log"
    server = ServerProcess(tmp_path / "data", database_url, processes=2, log_path=log)
    try:
        assert server.process is not None
        workers = worker_pids(server.process.pid)
        with httpx.Client(base_url=server.base, headers={"X-Request-ID": "checked-request-0001"}) as client:
            assert client.get("/v1/galleries", headers=server.admin).status_code == 200
    finally:
        server.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    [access] = [line for line in lines if line.get("request_id") == "checked-request-0001"]
    assert access["logger"] == "readmit.access" and access["route"] == "/v1/galleries" and access["status"] == 200
    assert access["pid"] in workers, "logged by the worker that served it"
    assert {line["pid"] for line in lines if line["logger"].startswith("uvicorn")} & workers, "uvicorn's too"


@pytest.mark.parametrize("processes", [1, 2])
def test_a_node_with_another_audit_key_refuses_to_start(tmp_path, database_url, processes):
    """Every node of one database signs the same log: a node given a key of its own would
    publish a second history that no party's verifier accepts. Refused, it says why on one line
    and exits 3, with several processes too (uvicorn's supervisor returned 0 when its workers'
    start was refused)."""
    if processes > 1 and database_url is None:
        pytest.skip("several processes serve PostgreSQL only")
    server = ServerProcess(tmp_path / "data", database_url)
    try:
        auditor = server.principal("auditor")
        checkpoint = httpx.post(f"{server.base}/v1/audit/checkpoint", headers=auditor, timeout=10)
        assert checkpoint.status_code == 200, checkpoint.text
    finally:
        server.stop()
    other_key = tmp_path / "other.key"
    env = {**server.env, "READMIT_AUDIT_KEY_FILE": str(other_key)}
    subprocess.run([sys.executable, "-m", "app", "audit", "keygen", "--name", "other/log"], env=env, check=True)
    run = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(server.port), "--processes", str(processes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr[-2000:]
    assert "audit_key_mismatch" in run.stdout and "READMIT_AUDIT_KEY_FILE" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_a_second_service_on_a_folder_in_use_stops_with_one_line(tmp_path):
    """A refused start says why on one line and exits 3; raised through uvicorn, it was some
    eighty lines of traceback around the reason."""
    first = ServerProcess(tmp_path / "data")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
            env=first.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        first.stop()
    assert second.returncode == 3
    assert "Traceback" not in second.stdout + second.stderr
    [refusal] = [json.loads(line) for line in second.stdout.splitlines() if '"critical"' in line]
    assert refusal["message"].startswith("cannot start: another readmit process is using the data folder")
    assert refusal["reason"] == "data_dir_locked"


def test_what_the_service_writes_in_its_data_folder_is_its_user_s_alone(tmp_path):
    """The database holds identity attributes in clear and API keys' hashes: no other user of the
    host may read it, nor the snapshots, nor the keys."""
    server = ServerProcess(tmp_path / "data")
    try:
        server.gallery()
        with httpx.Client(base_url=server.base, headers=server.admin) as client:  # a snapshot on stop
            assert client.get("/v1/galleries").status_code == 200
    finally:
        server.stop()
    written = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert any(path.name == "readmit.db" for path in written)
    assert any(path.suffix == ".snapshot" for path in written)
    shared = {str(path.relative_to(tmp_path)): oct(path.stat().st_mode & 0o777) for path in written}
    assert all(mode.endswith("00") for mode in shared.values()), shared


def leaders_in_metrics(server: ServerProcess) -> float | None:
    text = httpx.get(f"{server.base}/metrics", headers=server.admin, timeout=5).text
    values = [
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("readmit_background_passes_leading")
    ]
    return sum(values) if values else None


def test_one_process_runs_the_background_passes_and_another_takes_over_when_it_dies(two_workers):
    """Each serving process has a passes child; one of them leads (the others would decrypt and
    compare every search's probes again, and queue on the leader's rows); when its process is
    killed, another leads within seconds."""
    server, workers = two_workers
    assert server.process is not None

    def leaders_settle_at_one(within_s: float) -> float | None:
        deadline, seen = time.monotonic() + within_s, None
        while time.monotonic() < deadline:
            seen = leaders_in_metrics(server)
            if seen == 1 and len(worker_pids(server.process.pid)) == 2:
                time.sleep(2)  # and stays at one: a second leader would show by now
                seen = leaders_in_metrics(server)
                if seen == 1:
                    return seen
            time.sleep(0.2)
        return seen

    assert leaders_settle_at_one(30) == 1, "one of the two processes' passes leads, not both"
    for victim in sorted(workers):
        os.kill(victim, signal.SIGKILL)
        assert leaders_settle_at_one(60) == 1, "after its process was killed, one leads again"
