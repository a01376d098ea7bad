"""Federation between national nodes, each a real service process with its own data folder on
loopback: FRA and BEL are receiving states, SEN the country of origin holding the only gallery
(on PostgreSQL when READMIT_TEST_POSTGRES_URL is set).
A FRA case is identified from SEN's registry and confirmed by SEN's consul on SEN's node; BEL,
without an agreement at SEN, is refused there and both nodes audit it; tampered, replayed,
unsigned and oversized messages are refused; SEN down gives peer_unavailable and nothing is lost
when it returns."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.federation.node import load_node
from app.federation.signatures import sign_request
from tests.app.conftest import postgres_database
from tests.conftest import POSTGRES_URL
from tests.harness import ServerProcess, case_body, free_port, identification_body, metric, records

DIM = 64
FAST = {
    "READMIT_FEDERATION_POLL_INTERVAL_S": "0.5",
    "READMIT_FEDERATION_NOTIFY_INTERVAL_S": "0.2",
    "READMIT_FEDERATION_TIMEOUT_S": "60",  # an identification's peers are bounded by its wait, not this
    "READMIT_FEDERATION_MAX_BODY_BYTES": "65536",
}


@dataclass
class Node:
    country: str
    server: ServerProcess
    public_key: str
    data_dir: Path

    @property
    def base(self) -> str:
        return self.server.base

    def call(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.call(method, path, self.server.admin, **kwargs)


def start_node(root: Path, country: str, database_url: str | None = None) -> Node:
    data_dir = root / country
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir)}
    init = [sys.executable, "-m", "app", "node", "init", "--country", country, "--name", f"{country} node"]
    printed = subprocess.run(init, env=env, capture_output=True, text=True, check=True).stdout.strip()
    server = ServerProcess(data_dir, database_url, **FAST)
    node = Node(country, server, printed, data_dir)
    assert node.call("GET", "/v1/node", {}).json() == {
        "country": country,
        "name": f"{country} node",
        "public_key": printed,
        "api_version": "1",
    }
    return node


def peer(at: Node, other: Node) -> None:
    body = {"country": other.country, "url": other.base, "public_key": other.public_key}
    response = at.admin("POST", "/v1/peers", json=body)
    assert response.status_code == 201, response.text


def agreement(at: Node, receiving: str, origin: str = "SEN") -> None:
    body = {
        "receiving_country": receiving,
        "origin_country": origin,
        "modalities": ["face"],
        "valid_from": "2020-01-01",
    }
    assert at.admin("POST", "/v1/agreements", json=body).status_code == 201


@dataclass
class Federation:
    fra: Node
    bel: Node
    sen: Node
    people: list[dict[str, Any]]
    police: dict[str, dict[str, str]]
    consul: dict[str, str]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """FRA and BEL on SQLite; SEN, the origin, on PostgreSQL when a test server is given."""
    root = tmp_path_factory.mktemp("federation")
    with ExitStack() as stack:
        databases = {"SEN": stack.enter_context(postgres_database()) if POSTGRES_URL else None}
        nodes = []
        for country in ("FRA", "BEL", "SEN"):
            nodes.append(start_node(root, country, databases.get(country)))
            stack.callback(nodes[-1].server.stop)
        yield federate(*nodes)


def federate(fra: Node, bel: Node, sen: Node) -> Federation:
    """Peers on both sides, agreements, SEN's gallery and the officers of each node."""
    for requester in (fra, bel):
        peer(requester, sen)
        peer(sen, requester)
        agreement(requester, requester.country)  # each receiving state records its agreement
    agreement(sen, "FRA")  # SEN has one with FRA only
    gallery = sen.admin(
        "POST",
        "/v1/galleries",
        json={"country": "SEN", "modality": "face", "template_format": {"model": "arcface-r100", "dimension": DIM}},
    ).json()["id"]
    people = records(60, DIM, seed=5)
    registry = sen.server.principal("registry", "SEN")
    enrolled = sen.call("POST", f"/v1/galleries/{gallery}/records:batch", registry, json={"records": people})
    assert enrolled.json()["inserted"] == 60
    police = {
        "FRA": fra.server.principal("border_police", "FRA", "FRA-DCPAF"),
        "BEL": bel.server.principal("border_police", "BEL", "BEL-OE"),
    }
    return Federation(fra, bel, sen, people, police, sen.server.principal("consular", "SEN"))


def probe_of(person: dict[str, Any], seed: int = 1) -> np.ndarray:
    template = np.asarray(person["templates"][0], dtype=np.float32)
    return template + np.random.default_rng(seed).normal(0, 0.05, DIM).astype(np.float32)


def identify(
    node: Node,
    police: dict[str, str],
    ref: str,
    probe: np.ndarray,
    countries: tuple[str, ...] = ("SEN",),
    **extra: Any,
) -> dict[str, Any]:
    case = node.call("POST", "/v1/cases", police, json=case_body(ref, countries=countries)).json()
    response = node.call(
        "POST", f"/v1/cases/{case['id']}/identifications", police, json=identification_body(probe, **extra)
    )
    assert response.status_code in (200, 202), response.text
    return {"case": case["id"], **response.json()}


def eventually(read: Any, done: Any, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def events(node: Node, action: str) -> list[dict[str, Any]]:
    auditor = node.server.principal("auditor")
    listed = node.call("GET", "/v1/audit/events?limit=1000", auditor).json()["events"]
    return [event for event in listed if event["action"] == action]


def test_a_case_is_identified_from_the_registry_of_the_country_of_origin(federation):
    fra, sen = federation.fra, federation.sen
    search = identify(fra, federation.police["FRA"], "FRA-1", probe_of(federation.people[7]), wait_ms=5000)
    [remote] = search["remote_searches"]
    assert remote["country"] == "SEN" and remote["status"] == "done"
    assert search["skipped"] == [] and search["candidates"] == []
    top = remote["candidates"][0]
    assert (top["reference_id"], top["rank"], top["band"], top["review_state"]) == ("REF-00007", 1, "match", "pending")
    assert top["attributes"] is None, "no identity attribute crosses before a confirmation"

    # SEN's consul reviews on SEN's node, as for a local case; the remote case holds a pseudonym only
    [item] = [
        c
        for c in sen.call("GET", "/v1/review/candidates?state=pending", federation.consul).json()
        if c["id"] == top["id"]
    ]
    assert item["reference_id"] == "REF-00007" and item["attributes"]["family_name"] == "Name7"
    decided = sen.call(
        "POST", f"/v1/candidates/{top['id']}/decision", federation.consul, json={"decision": "confirmed", "note": "ok"}
    )
    assert decided.status_code == 200, decided.text

    police = federation.police["FRA"]
    case = eventually(
        lambda: fra.call("GET", f"/v1/cases/{search['case']}", police).json(), lambda c: c["status"] == "identified"
    )
    assert case["status"] == "identified"
    read = fra.call("GET", f"/v1/searches/{search['id']}", police).json()
    confirmed = read["remote_searches"][0]["candidates"][0]
    assert confirmed["review_state"] == "confirmed" and confirmed["attributes"]["family_name"] == "Name7"


def test_each_node_keeps_the_other_nodes_signature_of_every_exchange(federation):
    fra, sen = federation.fra, federation.sen
    search = identify(fra, federation.police["FRA"], "FRA-SIG", probe_of(federation.people[8]), wait_ms=5000)
    top = search["remote_searches"][0]["candidates"][0]
    confirmation = {"decision": "confirmed", "note": "ok"}
    decided = sen.call("POST", f"/v1/candidates/{top['id']}/decision", federation.consul, json=confirmation)
    assert decided.status_code == 200, decided.text
    eventually(lambda: events(fra, "federation.state_receive"), bool)
    sent = [e for e in events(fra, "federation.request_send") if e["outcome"] == "ok"]
    assert sent, "FRA audits the search it sent"
    proof = sent[0]["details"]["peer_signature"]
    sen_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sen.public_key))
    sen_key.verify(base64.b64decode(proof["signature"]), proof["signature_base"].encode())  # SEN signed this answer
    received = events(sen, "federation.request_receive")
    assert received
    probe_sized = re.compile(f"[A-Za-z0-9+/]{{{4 * DIM * 4 // 3},}}")  # a probe's float32 bytes in base64
    for node in (fra, sen):
        for action in ("federation.request_send", "federation.request_receive"):
            assert not probe_sized.search(json.dumps(events(node, action))), "probe bytes in the audit log"
    fra_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(fra.public_key))
    request_proof = received[0]["details"]["request_signature"]
    fra_key.verify(base64.b64decode(request_proof["signature"]), request_proof["signature_base"].encode())
    assert events(fra, "federation.state_receive"), "the confirmation came as a signed notification"
    assert events(sen, "federation.state_send")


def test_a_receiving_state_without_an_agreement_at_the_origin_is_refused_and_both_audit_it(federation):
    bel, sen = federation.bel, federation.sen
    search = identify(bel, federation.police["BEL"], "BEL-1", probe_of(federation.people[3]), wait_ms=3000)
    [remote] = search["remote_searches"]
    assert (remote["status"], remote["error"], remote["candidates"]) == ("refused", "no_agreement", [])
    assert search["skipped"] == [{"country": "SEN", "reason": "no_agreement"}]
    assert [e["outcome"] for e in events(bel, "federation.request_send")] == ["no_agreement"]
    refused = [e for e in events(sen, "federation.request_receive") if e["outcome"] == "no_agreement"]
    assert len(refused) == 1 and refused[0]["details"]["peer"] == "BEL"


def signed_request(sender: Node, receiver: Node, body: bytes) -> httpx.Request:
    request = httpx.Request(
        "POST", receiver.base + "/v1/federation/searches", content=body, headers={"content-type": "application/json"}
    )
    node = load_node(sender.data_dir / "node.key")
    assert node is not None
    sign_request(node, request)
    return request


def search_message(ref: str, person: dict[str, Any], **fields: Any) -> bytes:
    """A peer's search request for ``person``'s first template, as the wire carries it;
    ``fields`` replace the defaults (a forged request's id and pseudonym derive from ``ref``)."""
    probe = np.asarray(person["templates"][0], dtype="<f4")
    message = {
        "request_id": f"forged-{ref}",
        "requesting_country": "FRA",
        "case_reference": f"reference-{ref}",
        "deadline": "2099-01-01T00:00:00Z",
        "legal_basis": "consent",
        "modality": "face",
        "model": "arcface-r100",
        "dimension": DIM,
        "metric": "cosine",
        "probes_b64": [base64.b64encode(probe.tobytes()).decode()],
        "target_fpir": 0.001,
        "max_candidates": 5,
        **fields,
    }
    return json.dumps(message).encode()


def test_tampered_replayed_unsigned_and_oversized_messages_are_refused(federation):
    fra, sen = federation.fra, federation.sen
    with httpx.Client(timeout=30) as client:
        genuine = signed_request(fra, sen, search_message("A", federation.people[1]))
        assert client.send(genuine).status_code in (200, 202)
        replayed = client.send(genuine)
        assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "replayed_message")

        tampered = signed_request(fra, sen, search_message("B", federation.people[1]))
        tampered.stream = httpx.ByteStream(search_message("B", federation.people[2]))  # another person's probe
        answer = client.send(tampered)
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_signature")

        answer = client.post(sen.base + "/v1/federation/searches", content=search_message("C", federation.people[1]))
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_signature")

        oversized = signed_request(fra, sen, b" " * 70_000 + search_message("D", federation.people[1]))
        answer = client.send(oversized)
        assert (answer.status_code, answer.json()["error"]["code"]) == (413, "payload_too_large")

        forged_country = search_message("E", federation.people[1]).replace(b'"FRA"', b'"BEL"')
        answer = client.send(signed_request(fra, sen, forged_country))
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "wrong_country")


def test_an_origin_down_is_peer_unavailable_and_nothing_is_lost_when_it_returns(federation):
    fra, sen = federation.fra, federation.sen
    police = federation.police["FRA"]
    sen.server.kill()
    try:
        search = identify(
            fra, police, "FRA-2", probe_of(federation.people[11]), wait_ms=1000, retry_unavailable_peers=True
        )
        assert search["skipped"] == [{"country": "SEN", "reason": "peer_unavailable"}]
        assert search["remote_searches"][0]["status"] == "sending"
    finally:
        sen.server.start()
    read = eventually(
        lambda: fra.call("GET", f"/v1/searches/{search['id']}", police).json(),
        lambda s: s["remote_searches"][0]["status"] == "done",
    )
    assert read["skipped"] == []
    assert read["remote_searches"][0]["candidates"][0]["reference_id"] == "REF-00011"
    pending = sen.call("GET", "/v1/review/candidates?state=pending", federation.consul).json()
    assert [c["reference_id"] for c in pending].count("REF-00011") == 1, "the resent request ran once"


class SilentPeer:
    """A node that accepts a connection and never answers (until the test ends): the slowest
    peer there is."""

    def __init__(self) -> None:
        released = self.released = threading.Event()

        class Hold(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                released.wait(120)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hold)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(key).decode()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_silent_peer_delays_no_other_countrys_answer(federation):
    fra = federation.fra
    silent = SilentPeer()
    try:
        body = {"country": "GIN", "url": silent.url, "public_key": silent.public_key}
        assert fra.admin("POST", "/v1/peers", json=body).status_code == 201
        agreement(fra, "FRA", origin="GIN")
        # FRA's peers may take 60 s to answer a message: were GIN asked before SEN, and waited
        # for, this answer would come after the test client's 30 s
        search = identify(
            fra, federation.police["FRA"], "FRA-3", probe_of(federation.people[21]), ("GIN", "SEN"), wait_ms=3000
        )
    finally:
        silent.close()
    remote = {r["country"]: r for r in search["remote_searches"]}
    assert remote["SEN"]["status"] == "done"
    assert remote["SEN"]["candidates"][0]["reference_id"] == "REF-00021"
    assert (remote["GIN"]["status"], remote["GIN"]["error"]) == ("unavailable", "peer_unavailable")
    assert search["skipped"] == [{"country": "GIN", "reason": "peer_unavailable"}]


def test_each_peers_messages_latency_and_failures_are_in_the_operators_metrics(federation):
    fra, bel, sen = federation.fra, federation.bel, federation.sen
    sent = {"name": "readmit_peer_messages_total", "peer": "SEN", "kind": "search", "direction": "sent"}
    timed = {"name": "readmit_peer_message_seconds_count", "peer": "SEN", "kind": "search"}
    received = {"name": "readmit_peer_messages_total", "peer": "FRA", "kind": "search", "direction": "received"}

    def scrape() -> tuple[str, str]:
        return fra.admin("GET", "/metrics").text, sen.admin("GET", "/metrics").text

    fra_before, sen_before = scrape()
    identify(fra, federation.police["FRA"], "FRA-4", probe_of(federation.people[31]), wait_ms=5000)
    fra_after, sen_after = scrape()
    assert metric(fra_after, **sent, outcome="200") - metric(fra_before, **sent, outcome="200") == 1
    assert metric(fra_after, **timed) - metric(fra_before, **timed) == 1
    assert metric(sen_after, **received, outcome="200") - metric(sen_before, **received, outcome="200") == 1

    # BEL's peer for GNB listens nowhere
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    nowhere = {"country": "GNB", "url": f"http://127.0.0.1:{free_port()}", "public_key": base64.b64encode(key).decode()}
    assert bel.admin("POST", "/v1/peers", json=nowhere).status_code == 201
    agreement(bel, "BEL", origin="GNB")
    search = identify(bel, federation.police["BEL"], "BEL-2", probe_of(federation.people[31]), ("GNB",), wait_ms=1000)
    assert search["skipped"] == [{"country": "GNB", "reason": "peer_unavailable"}]
    failures = {"peer": "GNB", "kind": "search", "reason": "unreachable"}
    assert metric(bel.admin("GET", "/metrics").text, "readmit_peer_failures_total", **failures) == 1
