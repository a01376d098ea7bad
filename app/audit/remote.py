"""The offline verifier a country (or anyone holding an auditor key) runs against a readmit
service, with no access to its code's internals or its database: only HTTP, the log's verifier
key, and a state file of its own.

Each run: fetch the latest checkpoint and check its signature; prove it consistent with the
checkpoint stored by the previous run; download every event the key may see up to the new tree
size and recompute its chain hash and Merkle leaf; prove each in the new tree; then store the new
checkpoint. A key that sees part of the log (a country's auditor) proves each event with its
inclusion proof. A key that sees all of it rebuilds the tree from the events themselves, onto the
tree's right edge kept from the previous run, and compares roots: a page of events a request,
rather than a proof an event (which a log of thousands of events ran into the rate limit with).
Any failure names its reason and leaves the state file as it was, so the evidence (the old
checkpoint, signed by the log) is kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.audit import merkle
from app.audit.canonical import canonical_json
from app.audit.notes import Checkpoint, NoteError, Verifier

PAGE = 1000

MAX_RETRY_AFTER_S = 300.0
"""How long a run waits when the service says "too many requests, retry after N s" (each time)
before it gives up: a country's auditor with many events asks a proof for each, beyond the
per-principal rate limit."""


class VerificationFailed(Exception):
    """The log contradicts itself or what this verifier saw before: its message is the reason."""


class CannotVerify(Exception):
    """The service could not be asked (down, refusing the key, over its rate limit for longer
    than :data:`MAX_RETRY_AFTER_S`): nothing is proven either way, and the state is kept."""


@dataclass(frozen=True)
class State:
    """What a verifier keeps between runs: the last checkpoint it accepted, verbatim, and, for a
    verifier of the whole log, that tree's compact range (its right edge: at most log2(n)
    hashes, base64), from which the next run extends the tree with the new events alone."""

    checkpoint: str
    compact_range: list[str] | None = None

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        return cls(stored["checkpoint"], stored.get("compact_range"))

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the old state or the new, never half of one."""
        stored: dict[str, Any] = {"checkpoint": self.checkpoint}
        if self.compact_range is not None:
            stored["compact_range"] = self.compact_range
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(stored, indent=1) + "\n")
        os.replace(temporary, path)


@dataclass(frozen=True)
class Outcome:
    previous_size: int | None
    checkpoint: Checkpoint
    events_checked: int


def _ask(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    """GET ``path``, waiting as long as the service's ``Retry-After`` says when it answers 429."""
    while True:
        response = client.get(path, params=params)
        if response.status_code != 429:
            return response
        wait_s = float(response.headers.get("Retry-After", "1"))
        if wait_s > MAX_RETRY_AFTER_S:
            raise CannotVerify(f"GET {path}: rate limited for {wait_s:.0f} s")
        time.sleep(wait_s)


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = _ask(client, path, **params)
    if response.status_code != 200:
        raise CannotVerify(f"GET {path} answered {response.status_code}: {response.text[:300]}")
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


def listed_events(client: httpx.Client, after: int, up_to: int) -> Iterator[dict[str, Any]]:
    """The events the key may see with ``after < seq <= up_to``, in order, each with a content
    that hashes to its ``hash``."""
    while after < up_to:
        page = _get(client, "/v1/audit/events", after=after, limit=PAGE)
        for event in page["events"]:
            if event["seq"] > up_to:
                return
            if hashlib.sha256(canonical_json(event)).hexdigest() != event["hash"]:
                raise VerificationFailed(f"event {event['seq']}: its hash is not that of its content")
            after = event["seq"]
            yield event
        if page["next_after"] is None:
            return


def check_inclusion(client: httpx.Client, event: dict[str, Any], checkpoint: Checkpoint) -> None:
    seq = event["seq"]
    response = _ask(client, "/v1/audit/proof/inclusion", seq=seq, tree_size=checkpoint.size)
    if response.status_code == 404:
        raise VerificationFailed(f"missing event: {seq} was listed but the log has no proof of it")
    if response.status_code != 200:
        raise CannotVerify(f"inclusion proof of event {seq} answered {response.status_code}")
    try:
        merkle.verify_inclusion(
            seq - 1,
            checkpoint.size,
            merkle.leaf_hash(canonical_json(event)),
            _decode(response.json()["hashes"]),
            checkpoint.root,
        )
    except merkle.ProofError as error:
        raise VerificationFailed(f"missing event: {seq} as listed is not in the signed tree ({error})") from None


def check_listed(client: httpx.Client, old: Checkpoint | None, new: Checkpoint) -> int:
    """A key that sees part of the log: each event it may see after ``old`` proven in ``new``,
    one inclusion proof apiece."""
    checked = 0
    for event in listed_events(client, old.size if old else 0, new.size):
        check_inclusion(client, event, new)
        checked += 1
    return checked


def check_whole_log(
    client: httpx.Client, state: State | None, old: Checkpoint | None, new: Checkpoint
) -> tuple[int, merkle.CompactRange]:
    """A key that sees every event: the tree rebuilt from them, leaf by leaf, onto the compact
    range stored with ``old`` (from the first event when there is none), must have ``new``'s
    root; no seq may be missing from the listing. That proves every event included at once,
    with one request per page of events. When the roots differ, the events are proven one by
    one to name the first that is not in the signed tree."""
    tree = merkle.CompactRange()
    if state is not None and old is not None and state.compact_range is not None:
        tree = merkle.CompactRange(old.size, _decode(state.compact_range))
        if tree.root() != old.root:
            raise VerificationFailed("the state file's compact range is not the tree of its checkpoint")
    start, checked = tree.size, 0
    for event in listed_events(client, start, new.size):
        if event["seq"] != tree.size + 1:
            raise VerificationFailed(f"missing event: {tree.size + 1} is in the tree but not in the listing")
        tree.append(merkle.leaf_hash(canonical_json(event)))
        checked += 1
    if tree.size < new.size:
        raise VerificationFailed(f"missing event: {tree.size + 1} is in the tree but not in the listing")
    if tree.root() != new.root:
        for event in listed_events(client, start, new.size):
            check_inclusion(client, event, new)
        raise VerificationFailed("the events listed do not make the signed tree")
    return checked, tree


def verify_remote(client: httpx.Client, verifier: Verifier, state_path: Path, whole_log: bool = False) -> Outcome:
    """One verification run (module docstring). ``whole_log``: the key sees every event (an
    auditor without a country), so every seq up to the tree size must be listed."""
    state = State.load(state_path)
    note = _get(client, "/v1/audit/checkpoint")["checkpoint"]
    new = open_checkpoint(verifier, note)
    old = open_checkpoint(verifier, state.checkpoint) if state else None
    if old:
        check_consistency(client, old, new)
    if whole_log:
        checked, tree = check_whole_log(client, state, old, new)
        State(note, [base64.b64encode(h).decode() for h in tree.hashes]).save(state_path)
    else:
        checked = check_listed(client, old, new)
        State(note).save(state_path)
    return Outcome(old.size if old else None, new, checked)
