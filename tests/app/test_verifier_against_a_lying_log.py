"""The offline verifier (``readmit audit verify-remote``) against a service that lies: a log
kept here with real hashes, proofs and signed checkpoints, served through an HTTP transport whose
answers a test bends as a malicious operator would. The verifier must not accept, must not loop,
and must not turn a verdict into "could not verify"."""

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.audit import merkle, remote
from app.audit.canonical import GENESIS_HASH, canonical_json
from app.audit.notes import Checkpoint, Signer

NAME = "lying.example/audit"


def mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split(len(leaves))
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


class Log:
    """Events 1..n, each touching SEN or MLI, as the service would list them."""

    def __init__(self, count: int) -> None:
        self.signer = Signer.generate(NAME)
        self.events: list[dict[str, Any]] = []
        self.size = 0
        for _ in range(count):
            self.append()

    def append(self) -> None:
        seq = len(self.events) + 1
        event = {
            "seq": seq,
            "at": f"2026-11-27T09:00:{seq % 60:02d}.000000+00:00",
            "principal_id": 1,
            "role": "registry",
            "action": "record.read",
            "resource": f"gallery/1/record/R-{seq}",
            "outcome": "ok",
            "details": {"countries": ["SEN" if seq % 2 else "MLI"]},
            "prev_hash": self.events[-1]["hash"] if self.events else GENESIS_HASH,
        }
        event["hash"] = hashlib.sha256(canonical_json(event)).hexdigest()
        self.events.append(event)

    def leaves(self, size: int) -> list[bytes]:
        return [merkle.leaf_hash(canonical_json(event)) for event in self.events[:size]]

    def sign(self) -> None:
        """A checkpoint of every event so far."""
        self.size = len(self.events)

    def answer(self, request: httpx.Request, listing: Callable[[int], dict[str, Any]], country: str) -> httpx.Response:
        params = request.url.params
        if request.url.path == "/v1/audit/checkpoint":
            root = mth(self.leaves(self.size))
            note = self.signer.sign(Checkpoint(NAME, self.size, root, datetime.now(UTC)).text())
            return httpx.Response(200, json={"checkpoint": note})
        if request.url.path == "/v1/audit/events":
            return httpx.Response(200, json=listing(int(params["after"])))
        leaves = self.leaves(int(params.get("tree_size", params.get("to", 0))))
        if request.url.path == "/v1/audit/proof/inclusion":
            ranges = merkle.inclusion_ranges(int(params["seq"]) - 1, len(leaves))
        else:
            ranges = merkle.consistency_ranges(int(params["from"]), len(leaves))
        return httpx.Response(200, json={"hashes": [base64.b64encode(mth(leaves[a:b])).decode() for a, b in ranges]})

    def honest_listing(self, country: str) -> Callable[[int], dict[str, Any]]:
        def listing(after: int) -> dict[str, Any]:
            page = [e for e in self.events if e["seq"] > after and country in e["details"]["countries"]][:2]
            return {"events": page, "next_after": page[-1]["seq"] if len(page) == 2 else None}

        return listing


def client(log: Log, listing: Callable[[int], dict[str, Any]], country: str = "SEN") -> httpx.Client:
    return httpx.Client(
        base_url="http://log", transport=httpx.MockTransport(lambda request: log.answer(request, listing, country))
    )


def verify(log: Log, state, listing=None, whole_log: bool = False) -> remote.Outcome:
    with client(log, listing or log.honest_listing("SEN")) as http:
        return remote.verify_remote(http, log.signer.verifier, state, whole_log=whole_log)


@pytest.fixture
def proven(tmp_path):
    """A country's verifier has proven SEN's events under a checkpoint of 6 events."""
    log = Log(6)
    log.sign()
    state = tmp_path / "sen.json"
    assert verify(log, state).events_checked == 3  # 1, 3, 5
    log.append()
    log.append()  # 7 (SEN) and 8
    log.sign()
    return log, state


def test_an_event_slipped_in_out_of_order_among_the_proven_ones_is_refused(proven):
    log, state = proven
    forged = {**log.events[2], "resource": "gallery/1/record/FORGED"}  # event 3, edited
    forged["hash"] = hashlib.sha256(canonical_json(forged)).hexdigest()
    honest = log.honest_listing("SEN")

    def slipped(after: int) -> dict[str, Any]:
        if after == 0:  # 1, 3, 5 as proven, the new 7, then "3" again, edited, never proven
            return {"events": [log.events[0], log.events[2], log.events[4], log.events[6], forged], "next_after": None}
        return honest(after)

    held = state.read_text()
    with pytest.raises(remote.VerificationFailed, match="not in seq order"):
        verify(log, state, slipped)
    assert state.read_text() == held


def test_a_listing_that_does_not_advance_fails_rather_than_loops(proven):
    log, state = proven
    for page in ({"events": [], "next_after": 3}, {"events": [log.events[0]], "next_after": 0}):
        with pytest.raises(remote.VerificationFailed, match="does not advance"):
            verify(log, state, lambda after, page=page: page)


def test_a_changed_event_is_a_failed_verification_even_when_the_service_then_refuses_proofs(proven):
    log, state = proven

    def gone(after: int) -> dict[str, Any]:  # event 3 taken out of SEN's sight
        sen = [e for e in log.events if e["seq"] > after and e["seq"] != 3 and "SEN" in e["details"]["countries"]]
        return {"events": sen, "next_after": None}

    def answer(request: httpx.Request) -> httpx.Response:  # and no more proofs: 503
        if request.url.path == "/v1/audit/proof/inclusion":
            return httpx.Response(503)
        return log.answer(request, gone, "SEN")

    with (
        httpx.Client(base_url="http://log", transport=httpx.MockTransport(answer)) as http,
        pytest.raises(remote.VerificationFailed, match="taken out of this key's sight"),
    ):
        remote.verify_remote(http, log.signer.verifier, state)


def test_an_answer_not_as_documented_is_could_not_verify(proven):
    log, state = proven
    for broken in ({"events": [{"seq": 1}], "next_after": None}, {"items": []}):
        with pytest.raises(remote.CannotVerify, match="not as the API documents it"):
            verify(log, state, lambda after, broken=broken: broken)
    assert json.loads(state.read_text())["seen"]["events"] == 3  # the state of the proven run, kept


def test_an_honest_log_that_grew_verifies_for_a_country_and_for_the_whole_log(proven, tmp_path):
    log, state = proven
    assert verify(log, state).events_checked == 1  # 7, the only new SEN event

    def whole(after: int) -> dict[str, Any]:
        page = [e for e in log.events if e["seq"] > after][:3]
        return {"events": page, "next_after": page[-1]["seq"] if len(page) == 3 else None}

    assert verify(log, tmp_path / "whole.json", whole, whole_log=True).events_checked == 8
