"""The origin node as a peer sees it: the real app (in-process, SQLite and PostgreSQL), the peer
this test, signing with its own node key as a requesting node would. A search request runs once,
resent after a lost answer, while it still runs, or after the origin crashed before or after
writing its search; a peer over its rate limit is told when to come back; a message not signed
right is told how to sign; the operator's /metrics counts each peer's messages; the state a request
is answered with is audited as delivered and not notified again."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import update

from app.db.base import utcnow
from app.db.session import transaction
from app.federation import inbound
from app.federation.models import InboundSearch
from app.federation.node import NodeIdentity, create_node
from app.federation.notifier import ChangeNotifier
from app.federation.signatures import sign_request
from app.matching import service as matching
from tests.app.test_federation import search_message
from tests.harness import Service, metric, records

DIM = 64
RATE = 12
"""FRA's messages per minute at SEN."""
PEOPLE = records(30, DIM, seed=9)


@pytest.fixture
def origin(tmp_path, database_url) -> Iterator[Service]:
    """SEN's node, holding SEN's gallery, with FRA as its peer under an agreement."""
    create_node(tmp_path / "data" / "node.key", "SEN", "SEN node")
    service = Service(tmp_path / "data", database_url, federation_requests_per_minute=RATE)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def fra(origin: Service) -> NodeIdentity:
    node = NodeIdentity("FRA", "FRA node", Ed25519PrivateKey.generate())
    peer = {"country": "FRA", "url": "http://127.0.0.1:9", "public_key": node.public_key_b64}
    assert origin.client.post("/v1/peers", json=peer, headers=origin.admin).status_code == 201
    agreement = {
        "receiving_country": "FRA",
        "origin_country": "SEN",
        "modalities": ["face"],
        "valid_from": "2020-01-01",
    }
    assert origin.client.post("/v1/agreements", json=agreement, headers=origin.admin).status_code == 201
    gallery = origin.gallery("SEN", dimension=DIM)
    registry = origin.principal("registry", "SEN")
    enrolled = origin.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": PEOPLE}, headers=registry)
    assert enrolled.json()["inserted"] == len(PEOPLE)
    return node


def search_request(request_id: str, person: int, wait_ms: int) -> bytes:
    return search_message(
        request_id,
        PEOPLE[person],
        request_id=request_id,
        case_reference="pseudonym-of-case-1",
        deadline=(utcnow() + timedelta(days=30)).isoformat(),
        wait_ms=wait_ms,
    )


def send(origin: Service, node: NodeIdentity, body: bytes) -> httpx.Response:
    """Signed afresh each time, as a requesting node resends: a new nonce, the same request."""
    request = httpx.Request(
        "POST", "http://testserver/v1/federation/searches", content=body, headers={"content-type": "application/json"}
    )
    sign_request(node, request)
    return origin.client.send(request)


def pending_for(origin: Service, reference_id: str) -> int:
    """How many candidates SEN's consuls are asked to review for the record: one per run."""
    consul = origin.principal("consular", "SEN")
    listed = origin.client.get("/v1/review/candidates?state=pending", headers=consul).json()
    return [c["reference_id"] for c in listed].count(reference_id)


def test_a_resend_of_the_same_request_is_answered_by_the_same_search(origin, fra):
    body = search_request(uuid.uuid4().hex, person=4, wait_ms=5000)
    first, again = send(origin, fra, body), send(origin, fra, body)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json()["reference"] == first.json()["reference"]
    assert [c["id"] for c in again.json()["candidates"]] == [c["id"] for c in first.json()["candidates"]]
    assert first.json()["candidates"][0]["reference_id"] == "REF-00004"
    assert pending_for(origin, "REF-00004") == 1


def crash(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the origin's process died here")


@pytest.mark.parametrize("point", ["before_its_search_is_written", "after_its_search_is_written"])
def test_a_request_resent_after_the_origin_crashed_runs_once(origin, fra, database_url, monkeypatch, point):
    request_id = uuid.uuid4().hex
    with monkeypatch.context() as patched:
        if point == "before_its_search_is_written":
            patched.setattr(matching, "identify", crash)
        else:
            patched.setattr(inbound, "_answer", crash)  # links the search it ran, and answers
        with pytest.raises(RuntimeError):
            send(origin, fra, search_request(request_id, person=7, wait_ms=5000))

    # the process that took the request lives on, and may still be running it: not run again
    meanwhile = send(origin, fra, search_request(request_id, person=7, wait_ms=0))
    assert (meanwhile.status_code, meanwhile.json()["error"]["code"]) == (503, "request_in_progress")

    origin.restart(graceful=False)
    if database_url is not None:  # several processes may serve one PostgreSQL: the claim lapses
        with transaction(origin.runtime.sessions) as session:
            session.execute(update(InboundSearch).values(claimed_until=utcnow() - timedelta(seconds=1)))
    resent = send(origin, fra, search_request(request_id, person=7, wait_ms=5000))
    assert resent.status_code == 200, resent.text
    assert resent.json()["candidates"][0]["reference_id"] == "REF-00007"
    assert pending_for(origin, "REF-00007") == 1, "run once"


def scraped(origin: Service, name: str, **labels: str) -> float:
    return metric(origin.client.get("/metrics", headers=origin.admin).text, name, **labels)


def test_a_peer_over_its_rate_limit_is_told_when_to_come_back(origin, fra):
    received = {"name": "readmit_peer_messages_total", "peer": "FRA", "direction": "received"}
    answered = send(origin, fra, search_request(uuid.uuid4().hex, person=2, wait_ms=2000))
    assert answered.status_code == 200
    assert scraped(origin, **received, kind="search", outcome="200") == 1
    statuses = [
        send(origin, fra, search_request(uuid.uuid4().hex, person=2, wait_ms=0)).status_code for _ in range(RATE)
    ]
    assert statuses.count(429) == 1 and statuses[-1] == 429
    refused = send(origin, fra, search_request(uuid.uuid4().hex, person=2, wait_ms=0))
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert scraped(origin, **received, kind="any", outcome="rate_limited") == 2


def test_a_message_not_signed_right_is_told_how_to_sign_not_asked_for_a_bearer_token(origin, fra):
    body = search_request(uuid.uuid4().hex, person=3, wait_ms=0)
    unsigned = origin.client.post("/v1/federation/searches", content=body)
    stranger = NodeIdentity("FRA", "not FRA's node", Ed25519PrivateKey.generate())
    for refused in (unsigned, send(origin, stranger, body)):
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_signature")
        assert "www-authenticate" not in refused.headers
        assert refused.headers["accept-signature"] == (
            'readmit=("@method" "@target-uri" "content-digest");created;nonce;tag="readmit-federation";alg="ed25519"'
        )
    assert scraped(origin, "readmit_peer_messages_total", peer="unknown", outcome="invalid_signature") == 1


def test_the_state_a_request_is_answered_with_is_not_notified_again_a_change_after_it_is(origin, fra):
    unreachable = {"name": "readmit_peer_failures_total", "peer": "FRA", "kind": "notification"}
    answered = send(origin, fra, search_request(uuid.uuid4().hex, person=5, wait_ms=5000))
    assert answered.status_code == 200, answered.text
    auditor = origin.principal("auditor")
    listed = origin.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    [delivered] = [e for e in listed if e["action"] == "federation.state_send"]
    assert (delivered["details"]["how"], delivered["details"]["status"]) == ("answer", "done")
    fra_key = Ed25519PublicKey.from_public_bytes(fra.public_key)
    proof = delivered["details"]["peer_signature"]
    fra_key.verify(base64.b64decode(proof["signature"]), proof["signature_base"].encode())  # FRA's request

    # FRA's url answers nobody: each notification tried fails, and is counted
    runtime = origin.runtime
    notifier = ChangeNotifier(runtime.sessions, runtime.read_sessions, runtime.channel, sweep_s=3600)
    notifier.run_once()  # a sweep over every search FRA asked for
    assert scraped(origin, **unreachable, reason="unreachable") == 0, "nothing new to tell FRA"

    top = answered.json()["candidates"][0]
    consul = origin.principal("consular", "SEN")
    decision = {"decision": "rejected", "note": "not the same person"}
    assert origin.client.post(f"/v1/candidates/{top['id']}/decision", json=decision, headers=consul).status_code == 200
    notifier.run_once()  # what changed since the sweep only
    assert scraped(origin, **unreachable, reason="unreachable") >= 1, "the rejection is told to FRA"
