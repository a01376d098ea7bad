"""``readmit audit verify-remote`` against the real service as a process, and the attack the
verifiable log exists for: someone with the database (and the code, and the signing key)
rewrites an event, recomputes the whole chain, its head and the Merkle tree, and restarts the
service. The chain then checks out; a verifier holding an earlier checkpoint does not."""

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import remote
from app.audit.canonical import GENESIS_HASH, canonical_bytes
from app.audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditEventCountry,
    AuditHead,
    AuditPending,
    AuditTreeHead,
    AuditTreeNode,
)
from app.audit.notes import Signer, Verifier
from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from tests.harness import ServerProcess, free_port, records


def readmit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=120)


def activity(server: ServerProcess, auditor: dict[str, str], count: int = 3) -> int:
    """Some enrolment, then a checkpoint signed on demand; returns its tree size."""
    with httpx.Client(base_url=server.base, headers=server.admin, timeout=30) as api:
        gallery = api.post(
            "/v1/galleries",
            json={"country": "SEN", "modality": "face", "template_format": {"model": f"m{count}", "dimension": 8}},
        ).json()["id"]
        registry = server.principal("registry", "SEN")
        api.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records(count, 8)}, headers=registry)
        return int(api.post("/v1/audit/checkpoint", headers=auditor).json()["tree_size"])


def verify_remote(
    server: ServerProcess, auditor: dict[str, str], state, key: str | None = None, whole_log: bool = True
):
    env = {**os.environ, "READMIT_API_KEY": auditor["Authorization"].removeprefix("Bearer ")}
    verifier_key = key or server.verifier_key
    assert verifier_key is not None, "this server made the log's key"
    args = ["--url", server.base, "--key", verifier_key, "--state", str(state), *(["--whole-log"] * whole_log)]
    return readmit("audit", "verify-remote", *args, env=env)


@contextmanager
def insider(data_dir) -> Iterator[Session]:
    """A transaction on the service's database, as someone with the file (the service stopped)."""
    engine = make_engine(Settings(data_dir=data_dir).sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def rewrite_history(data_dir, seq: int, recompute_tree: bool) -> None:
    """What an insider does: triggers dropped, one event changed, every later hash and the head
    recomputed with the service's own code; with ``recompute_tree``, the Merkle tree and the
    checkpoints are dropped so that the service rebuilds and re-signs them at its next start."""
    with insider(data_dir) as session:
        session.execute(text("DROP TRIGGER audit_events_no_update"))
        session.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(outcome="denied"))
        previous = GENESIS_HASH
        for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
            event.prev_hash = previous
            event.hash = previous = hashlib.sha256(canonical_bytes(event)).hexdigest()
        session.execute(update(AuditHead).values(hash=previous))
        if recompute_tree:
            for table in ("audit_tree_nodes", "audit_checkpoints"):
                session.execute(text(f"DROP TRIGGER {table}_no_delete"))
            session.execute(delete(AuditTreeNode))
            session.execute(delete(AuditCheckpoint))
            session.execute(update(AuditTreeHead).values(size=0, root=hashlib.sha256(b"").hexdigest()))


def test_verify_remote_accepts_a_growing_log_and_catches_a_rewritten_one(tmp_path):
    server = ServerProcess(tmp_path / "data")
    state = tmp_path / "state.json"
    try:
        auditor = server.principal("auditor")
        first = activity(server, auditor)
        run = verify_remote(server, auditor, state)
        assert run.returncode == 0, run.stderr
        assert f"tree size {first} (first checkpoint stored)" in run.stdout
        second = activity(server, auditor, 4)
        run = verify_remote(server, auditor, state)
        assert run.returncode == 0, run.stderr
        assert f"tree size {second} (consistent with {first})" in run.stdout
        stranger = str(Signer.generate("readmit.test/audit").verifier)
        run = verify_remote(server, auditor, tmp_path / "other.json", key=stranger)
        assert run.returncode == 1 and "bad checkpoint signature" in run.stderr

        held = state.read_text()
        server.stop()
        rewrite_history(tmp_path / "data", seq=3, recompute_tree=True)
        chain = readmit("audit", "verify", env=server.env)
        assert chain.returncode == 0, chain.stderr  # the hash chain alone is fooled
        server.start()
        activity(server, auditor, 2)
        run = verify_remote(server, auditor, state)
        assert run.returncode == 1
        assert "inconsistent tree" in run.stderr
        assert state.read_text() == held  # the evidence is kept
    finally:
        server.stop()


def test_an_event_rewritten_under_an_existing_tree_is_reported_missing(tmp_path):
    server = ServerProcess(tmp_path / "data")
    try:
        auditor = server.principal("auditor")
        activity(server, auditor)
        server.stop()
        rewrite_history(tmp_path / "data", seq=2, recompute_tree=False)
        server.start()
        run = verify_remote(server, auditor, tmp_path / "fresh.json")
        assert run.returncode == 1
        assert "missing event: 2 as listed is not in the signed tree" in run.stderr
    finally:
        server.stop()


def tree_size(metrics: str) -> float:
    return next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("readmit_audit_tree_size "))


def test_events_acknowledged_before_a_crash_are_sequenced_at_the_next_start(tmp_path):
    """Acknowledged, still pending (no sequencing pass since start, no read of the trail), then
    SIGKILL: the next start chains them and puts them in the tree, and the log verifies."""
    server = ServerProcess(tmp_path / "data", READMIT_AUDIT_SEQUENCE_INTERVAL_S="3600")  # only the pass at start
    try:
        auditor = server.principal("auditor")
        for country in ("SEN", "MLI", "GIN"):
            server.principal("registry", country)
        server.kill()
        engine = make_engine(Settings(data_dir=tmp_path / "data").sqlalchemy_url)
        with engine.connect() as connection:
            chained = connection.execute(select(AuditHead.seq)).scalar_one()
            pending = connection.execute(select(func.count()).select_from(AuditPending)).scalar_one()
        engine.dispose()
        assert pending >= 3  # at least the registries, created well after the pass at start
        server.start()
        with httpx.Client(base_url=server.base, timeout=30) as api:
            for _ in range(50):  # the pass at start runs beside the index loading that /readyz waits for
                if tree_size(api.get("/metrics", headers=server.admin).text) >= chained + pending:
                    break
                time.sleep(0.1)
            assert tree_size(api.get("/metrics", headers=server.admin).text) >= chained + pending
        run = verify_remote(server, auditor, tmp_path / "state.json")
        assert run.returncode == 0, run.stderr
    finally:
        server.stop()


def test_a_whole_log_verifier_asks_a_page_of_events_a_request_and_no_inclusion_proof(tmp_path):
    """Thousands of events once took one inclusion proof each, into the rate limit, and the run
    failed on a 429 worded like tampering. A verifier of the whole log rebuilds the tree from the
    events instead, every run from the first event."""
    server = ServerProcess(tmp_path / "data")
    state = tmp_path / "state.json"
    asked: list[str] = []
    try:
        auditor = server.principal("auditor")
        activity(server, auditor, 30)
        verifier = Verifier.parse(server.verifier_key)
        hooks = {"request": [lambda request: asked.append(request.url.path)]}
        with httpx.Client(base_url=server.base, headers=auditor, timeout=30, event_hooks=hooks) as client:
            first = remote.verify_remote(client, verifier, state, whole_log=True)
            assert first.events_checked == first.checkpoint.size
            assert "/v1/audit/proof/inclusion" not in asked
            activity(server, auditor, 5)
            asked.clear()
            second = remote.verify_remote(client, verifier, state, whole_log=True)
            assert second.events_checked == second.checkpoint.size, "the events under the first checkpoint again"
            assert "/v1/audit/proof/inclusion" not in asked and "/v1/audit/proof/consistency" in asked
            assert asked.count("/v1/audit/events") == 1, "a page of up to 1,000 events a request"
    finally:
        server.stop()


def edit_in_place(data_dir, seq: int) -> None:
    """The simplest insider: one event changed where it lies, nothing recomputed (the stronger
    one, who recomputes the chain, is in the tests above: its events are not in the tree)."""
    with insider(data_dir) as session:
        session.execute(text("DROP TRIGGER audit_events_no_update"))
        session.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(outcome="denied"))


def test_an_event_edited_or_taken_out_of_sight_under_a_held_checkpoint_is_caught_at_the_next_run(tmp_path):
    """The tree, and so every consistency proof, stays as it was: only the events served have
    changed. Each run looks at every event again, the whole log's verifier by rebuilding the tree,
    a country's by the digest of the events it had proven."""
    server = ServerProcess(tmp_path / "data")
    try:
        operator, senegal = server.principal("auditor"), server.principal("auditor", "SEN")
        size = activity(server, operator, 4)
        whole, scoped = tmp_path / "whole.json", tmp_path / "sen.json"
        assert verify_remote(server, operator, whole).returncode == 0
        assert verify_remote(server, senegal, scoped, whole_log=False).returncode == 0
        with httpx.Client(base_url=server.base, headers=senegal) as client:
            sen_events = [e["seq"] for e in client.get("/v1/audit/events").json()["events"] if e["seq"] <= size]
        assert len(sen_events) >= 2, "under the checkpoint both verifiers hold"
        server.stop()
        edit_in_place(tmp_path / "data", sen_events[0])
        server.start()
        for auditor, state, whole_log in ((operator, whole, True), (senegal, scoped, False)):
            run = verify_remote(server, auditor, state, whole_log=whole_log)
            assert run.returncode == 1 and f"event {sen_events[0]}: its hash is not that of its content" in run.stderr

        server.stop()
        rescope = delete(AuditEventCountry).where(AuditEventCountry.seq == sen_events[-1])
        with (
            pytest.raises(IntegrityError, match="audit_event_countries is append-only"),
            insider(tmp_path / "data") as session,
        ):
            session.execute(rescope)
        with insider(tmp_path / "data") as session:  # restore it, and re-scope another
            session.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            session.execute(update(AuditEvent).where(AuditEvent.seq == sen_events[0]).values(outcome="ok"))
            session.execute(text("DROP TRIGGER audit_event_countries_no_delete"))
            session.execute(rescope)
        server.start()
        run = verify_remote(server, senegal, scoped, whole_log=False)
        assert run.returncode == 1 and "taken out of this key's sight" in run.stderr
        assert verify_remote(server, operator, whole).returncode == 0, "the log itself is intact"
    finally:
        server.stop()


def test_a_state_file_that_cannot_be_read_is_one_line_and_exit_code_2(tmp_path):
    server = ServerProcess(tmp_path / "data")
    try:
        auditor = server.principal("auditor")
        bad = {"text": "not json", "empty": "{}", "number": '{"checkpoint": 5}'}
        for name, content in bad.items():
            (tmp_path / name).write_text(content)
        for path in [*(tmp_path / name for name in bad), tmp_path, tmp_path / "absent" / "state.json"]:
            run = verify_remote(server, auditor, path)
            assert run.returncode == 2, (path, run.stderr)
            assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        state = tmp_path / "state.json"
        assert verify_remote(server, auditor, state).returncode == 0
        held = json.loads(state.read_text())
        held["checkpoint"] = held["checkpoint"].replace("\n\n", "\n\n ", 1)  # an altered note
        state.write_text(json.dumps(held))
        run = verify_remote(server, auditor, state)
        assert run.returncode == 1 and "the state file's checkpoint does not open with this key" in run.stderr
    finally:
        server.stop()


def test_a_rate_limited_verifier_waits_as_told_and_a_service_it_cannot_ask_is_not_a_failed_log(tmp_path):
    """A 429 is waited out (``Retry-After``); a service that cannot be asked ends the run with
    exit code 2, not 1: nothing is proven either way, and the state file is left as it was."""
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, json={"ok": True})])
    with httpx.Client(base_url="http://log", transport=httpx.MockTransport(lambda _: next(answers))) as client:
        assert remote._get(client, "/v1/audit/checkpoint") == {"ok": True}
    too_long = httpx.MockTransport(lambda _: httpx.Response(429, headers={"Retry-After": "3600"}))
    with httpx.Client(base_url="http://log", transport=too_long) as client, pytest.raises(remote.CannotVerify):
        remote._get(client, "/v1/audit/checkpoint")

    state = tmp_path / "state.json"
    state.write_text('{"checkpoint": "kept"}')
    env = {**os.environ, "READMIT_API_KEY": "any"}
    key = str(Signer.generate("readmit.test/audit").verifier)
    run = readmit(
        "audit",
        "verify-remote",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--key",
        key,
        "--state",
        str(state),
        env=env,
    )
    assert run.returncode == 2 and "could not verify the audit log" in run.stderr
    assert state.read_text() == '{"checkpoint": "kept"}'
