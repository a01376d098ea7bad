"""``readmit audit verify-remote`` against the real service as a process, and the attack the
verifiable log exists for: someone with the database (and the code, and the signing key)
rewrites an event, recomputes the whole chain, its head and the Merkle tree, and restarts the
service. The chain then checks out; a verifier holding an earlier checkpoint does not."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import delete, func, select, text, update

from app.audit import remote
from app.audit.canonical import GENESIS_HASH, canonical_bytes
from app.audit.models import AuditCheckpoint, AuditEvent, AuditHead, AuditPending, AuditTreeHead, AuditTreeNode
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


def verify_remote(server: ServerProcess, auditor: dict[str, str], state, key: str | None = None):
    env = {**os.environ, "READMIT_API_KEY": auditor["Authorization"].removeprefix("Bearer ")}
    verifier_key = key or server.verifier_key
    assert verifier_key is not None, "this server made the log's key"
    args = ["--url", server.base, "--key", verifier_key, "--state", str(state), "--whole-log"]
    return readmit("audit", "verify-remote", *args, env=env)


def rewrite_history(data_dir, seq: int, recompute_tree: bool) -> None:
    """What an insider does: triggers dropped, one event changed, every later hash and the head
    recomputed with the service's own code; with ``recompute_tree``, the Merkle tree and the
    checkpoints are dropped so that the service rebuilds and re-signs them at its next start."""
    engine = make_engine(Settings(data_dir=data_dir).sqlalchemy_url)
    with make_session_factory(engine)() as session, session.begin():
        session.execute(text("DROP TRIGGER audit_events_no_update"))
        session.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(outcome="denied"))
        previous = GENESIS_HASH
        for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
            event.prev_hash = previous
            event.hash = previous = hashlib.sha256(canonical_bytes(event)).hexdigest()
        session.execute(update(AuditHead).values(hash=previous))
        if recompute_tree:
            session.execute(delete(AuditTreeNode))
            session.execute(delete(AuditCheckpoint))
            session.execute(update(AuditTreeHead).values(size=0, root=hashlib.sha256(b"").hexdigest()))
    engine.dispose()


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
    events instead, and keeps its right edge for the next run."""
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
            right_edge = json.loads(state.read_text())["compact_range"]
            assert len(right_edge) == first.checkpoint.size.bit_count()

            activity(server, auditor, 5)
            asked.clear()
            second = remote.verify_remote(client, verifier, state, whole_log=True)
            assert second.events_checked == second.checkpoint.size - first.checkpoint.size, "only the new ones"
            assert "/v1/audit/proof/inclusion" not in asked and "/v1/audit/proof/consistency" in asked

            held = json.loads(state.read_text())
            held["compact_range"][0] = base64.b64encode(bytes(32)).decode()  # a state file altered
            state.write_text(json.dumps(held))
            with pytest.raises(remote.VerificationFailed, match="compact range is not the tree of its checkpoint"):
                remote.verify_remote(client, verifier, state, whole_log=True)
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
