"""The background passes (the audit sequencer and the case linker) in a process of their own, as
``readmit serve`` runs them: their work is done there, a dead one is started again, and it never
outlives its serving process. And the turns SQLite's writers take across processes."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import text

from app.cases.linker import MIN_PASS_S
from app.core.config import Settings
from app.db.session import NestedWriteTransaction, make_engine, make_session_factory, transaction
from app.passes import NICENESS, PassesProcess, relay_wakeups, settings_environment
from tests.app.test_case_links import DIM
from tests.harness import ServerProcess, case_body, identification_body, metric


def passes_children(server: ServerProcess) -> list[int]:
    """The server's children running the passes (started by whichever of its threads)."""
    assert server.process is not None
    children = [
        pid
        for task in Path(f"/proc/{server.process.pid}/task").iterdir()
        for pid in task.joinpath("children").read_text().split()
    ]
    return [int(pid) for pid in children if b"passes" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def eventually(condition, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def server(tmp_path, database_url):
    running = ServerProcess(tmp_path / "data", database_url)
    try:
        yield running
    finally:
        running.stop()


def test_the_passes_run_in_a_child_that_links_cases_sequences_the_log_and_is_restarted(server, people):
    client = httpx.Client(base_url=server.base, timeout=30)
    [child] = eventually(lambda: passes_children(server))
    eventually(lambda: os.getpriority(os.PRIO_PROCESS, child) == NICENESS)  # below the requests' threads
    assert b"OPENBLAS_NUM_THREADS=1" in Path(f"/proc/{child}/environ").read_bytes().split(b"\0")

    gallery = server.gallery("SEN", dimension=DIM)
    registry = server.principal("registry", "SEN")
    records = [{"reference_id": f"SEN-{i}", "templates": [people.gallery[2 * i].tolist()]} for i in range(100)]
    assert client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records}, headers=registry).is_success
    agreement = {
        "receiving_country": "FRA",
        "origin_country": "SEN",
        "modalities": ["face"],
        "valid_from": "2020-01-01",
    }
    assert client.post("/v1/agreements", headers=server.admin, json=agreement).status_code == 201
    police = server.principal("border_police", "FRA", "FRA-DCPAF")
    person = int(people.mated_ids[-1])  # not enrolled: links compare probes with probes
    cases = []
    for ref, probe in (("P-1", people.gallery[people.gallery_ids == person][0]), ("P-2", people.mated_probes[-1])):
        case = client.post("/v1/cases", headers=police, json=case_body(ref, 1, 45, ("SEN",), "readmission_agreement"))
        search = client.post(
            f"/v1/cases/{case.json()['id']}/identifications", headers=police, json=identification_body(probe)
        )
        assert search.json()["status"] == "done", search.text
        cases.append(case.json()["id"])

    [link] = eventually(lambda: client.get(f"/v1/cases/{cases[1]}/links", headers=police).json())
    assert link["case_id"] == cases[0], "linked by the child, woken after the batch"

    def sequenced() -> float:
        return metric(client.get("/metrics", headers=server.admin).text, "readmit_audit_tree_size")

    events = eventually(sequenced)  # the child's gauge, in the server's scrape
    os.kill(child, signal.SIGKILL)
    [replacement] = eventually(lambda: [pid for pid in passes_children(server) if pid != child])
    assert metric(client.get("/metrics", headers=server.admin).text, "readmit_background_process_restarts_total") == 1
    auditor = server.principal("auditor")  # one event more, sequenced by the replacement
    assert eventually(lambda: sequenced() > events)
    chain = client.get("/v1/audit/verify", headers=auditor).json()
    assert chain["ok"] and chain["events_checked"] > events, chain

    server.kill()  # SIGKILL: the child sees its pipe end and stops
    eventually(lambda: not alive(replacement), timeout_s=10)


def test_a_writer_holds_the_file_turn_for_its_transaction_only(tmp_path):
    """Another process's writer waits on the turn's file, woken at once when it is released,
    rather than sleeping in SQLite's busy handler: the turn is taken at BEGIN and given back at
    COMMIT."""
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    turn = f"{tmp_path / 'turns.db'}-writer.lock"

    def taken() -> bool:
        with open(turn, "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(other, fcntl.LOCK_UN)
            return False

    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        assert taken()
    assert not taken()
    engine.dispose()


def test_a_write_transaction_begun_inside_another_in_one_thread_is_an_error_not_a_freeze(tmp_path):
    """The turn is not reentrant: a second writing session of the same thread waited for the
    first for ever, with every other writer behind it (the first verification after a start did
    that). It now raises at once, and the turn is free again once the outer transaction ends."""
    engine = make_engine(f"sqlite:///{tmp_path / 'nested.db'}")
    sessions = make_session_factory(engine)
    with transaction(sessions) as first:
        first.execute(text("CREATE TABLE t (x INTEGER)"))
    with pytest.raises(NestedWriteTransaction), transaction(sessions) as outer:
        outer.execute(text("INSERT INTO t VALUES (0)"))
        with transaction(sessions) as inner:
            inner.execute(text("INSERT INTO t VALUES (1)"))
    with transaction(sessions) as again:
        again.execute(text("INSERT INTO t VALUES (2)"))
    engine.dispose()


def test_the_child_reads_back_every_setting_of_its_parent_secrets_included(tmp_path, monkeypatch):
    """A serving process made in code passes its settings to the child through its environment:
    a masked secret would have been a wrong master key there, and the child refused to start."""
    parent = Settings(
        data_dir=tmp_path / "data",
        master_key="c2VjcmV0LWJ1dC1ub3QtYS1yZWFsLWtleS1vZi0zMi1i",
        min_probe_quality={"finger": 20.0},
        share_decrypted_indexes=False,
        link_fmr=1e-7,
    )
    for name in list(os.environ):
        if name.startswith("READMIT_"):
            monkeypatch.delenv(name)
    for name, value in settings_environment(parent).items():
        monkeypatch.setenv(name, value)
    assert Settings() == parent


def test_a_child_told_to_stop_is_neither_restarted_nor_reported_as_ended(tmp_path, monkeypatch, caplog):
    """Stopping closes the pipe and the child ends: the watcher sees it end, and must not take that
    for a crash (an error line on every clean stop, and a restart counted)."""
    restarts = Counter("test_passes_restarts", "restarts", registry=CollectorRegistry())

    def spawn(self: PassesProcess) -> None:  # a child that, like the real one, ends at the pipe's end
        self._process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    monkeypatch.setattr(PassesProcess, "_spawn", spawn)
    passes = PassesProcess(Settings(data_dir=tmp_path / "data"), restarts)
    passes.start()
    passes.stop()
    passes._watcher.join(timeout=10)
    assert not passes._watcher.is_alive()
    assert not [record for record in caplog.records if "ended; starting it again" in record.getMessage()]
    assert restarts._value.get() == 0


def test_the_batches_that_end_while_the_linker_passes_wake_it_once_and_no_reader_meanwhile():
    """The child leaves the pipe unread for a pass's length after each wake-up: the bytes of the
    batches that end meanwhile wait there (no reader is blocked on the pipe for them to wake), and
    are one wake-up when it reads again."""
    read_end, write_end = os.pipe()
    wakes: list[int] = []
    pauses: list[float] = []
    os.write(write_end, b".")

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:
            for _ in range(40):  # the batches ending during the first pass
                os.write(write_end, b".")
        else:
            os.close(write_end)  # the parent gone

    relay_wakeups(read_end, lambda: wakes.append(1), pause)
    os.close(read_end)
    assert len(wakes) == 2, "one for the first batch, one for the forty after it"
    assert pauses == [MIN_PASS_S, MIN_PASS_S]
