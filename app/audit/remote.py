"""The offline verifier a country (or anyone holding an auditor key) runs against a readmit
service, with no access to its code's internals or its database: only HTTP, the log's verifier
key, and a state file of its own.

Each run: fetch the latest checkpoint and check its signature; prove it consistent with the
checkpoint stored by the previous run; download every event the key may see up to the new tree
size, recompute its chain hash and Merkle leaf, and check its inclusion proof; then store the new
checkpoint. Any failure names its reason and leaves the state file as it was, so the evidence (the
old checkpoint, signed by the log) is kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.audit import merkle
from app.audit.canonical import canonical_json
from app.audit.notes import Checkpoint, NoteError, Verifier

PAGE = 1000


class VerificationFailed(Exception):
    """The log contradicts itself or what this verifier saw before: its message is the reason."""


@dataclass(frozen=True)
class State:
    """What a verifier keeps between runs: the last checkpoint it accepted, verbatim."""

    checkpoint: str

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.exists():
            return None
        return cls(json.loads(path.read_text())["checkpoint"])

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the old state or the new, never half of one."""
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"checkpoint": self.checkpoint}, indent=1) + "\n")
        os.replace(temporary, path)


@dataclass(frozen=True)
class Outcome:
    previous_size: int | None
    checkpoint: Checkpoint
    events_checked: int


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise VerificationFailed(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _decode(values: list[str]) -> list[bytes]:
    return [base64.b64decode(value) for value in values]


def open_checkpoint(verifier: Verifier, note: str) -> Checkpoint:
    try:
        checkpoint = Checkpoint.parse(verifier.open(note))
    except NoteError as error:
        raise VerificationFailed(f"bad checkpoint signature: {error}") from None
    if checkpoint.origin != verifier.name:
        raise VerificationFailed(f"the checkpoint is of log {checkpoint.origin!r}, not {verifier.name!r}")
    return checkpoint


def check_consistency(client: httpx.Client, old: Checkpoint, new: Checkpoint) -> None:
    if new.size < old.size:
        raise VerificationFailed(f"inconsistent tree: it shrank from {old.size} to {new.size} events")
    proof = _get(client, "/v1/audit/proof/consistency", **{"from": old.size, "to": new.size})
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, _decode(proof["hashes"]))
    except merkle.ProofError as error:
        raise VerificationFailed(f"inconsistent tree: {error} (the log changed what it had signed)") from None


def check_event(client: httpx.Client, event: dict[str, Any], checkpoint: Checkpoint) -> None:
    seq, canonical = event["seq"], canonical_json(event)
    if hashlib.sha256(canonical).hexdigest() != event["hash"]:
        raise VerificationFailed(f"event {seq}: its hash is not that of its content")
    response = client.get("/v1/audit/proof/inclusion", params={"seq": seq, "tree_size": checkpoint.size})
    if response.status_code == 404:
        raise VerificationFailed(f"missing event: {seq} was listed but the log has no proof of it")
    if response.status_code != 200:
        raise VerificationFailed(f"inclusion proof of event {seq} answered {response.status_code}")
    try:
        merkle.verify_inclusion(
            seq - 1, checkpoint.size, merkle.leaf_hash(canonical), _decode(response.json()["hashes"]), checkpoint.root
        )
    except merkle.ProofError as error:
        raise VerificationFailed(f"missing event: {seq} as listed is not in the signed tree ({error})") from None


def verify_remote(client: httpx.Client, verifier: Verifier, state_path: Path, whole_log: bool = False) -> Outcome:
    """One verification run (module docstring). ``whole_log``: the key sees every event (an
    auditor without a country), so every seq up to the tree size must be listed."""
    state = State.load(state_path)
    note = _get(client, "/v1/audit/checkpoint")["checkpoint"]
    new = open_checkpoint(verifier, note)
    old = open_checkpoint(verifier, state.checkpoint) if state else None
    if old:
        check_consistency(client, old, new)
    after, checked = old.size if old else 0, 0
    while after < new.size:
        page = _get(client, "/v1/audit/events", after=after, limit=PAGE)
        events = [event for event in page["events"] if event["seq"] <= new.size]
        for event in events:
            if whole_log and event["seq"] != after + 1:
                raise VerificationFailed(f"missing event: {after + 1} is in the tree but not in the listing")
            check_event(client, event, new)
            after, checked = event["seq"], checked + 1
        if len(events) < len(page["events"]) or page["next_after"] is None:
            break
    if whole_log and after < new.size:
        raise VerificationFailed(f"missing event: {after + 1} is in the tree but not in the listing")
    State(note).save(state_path)
    return Outcome(old.size if old else None, new, checked)
