"""The offline verifier a country (or anyone holding an auditor key) runs against a readmit
service, with no access to its code's internals or its database: only HTTP, the log's verifier
key, and a state file of its own.

Each run: fetch the latest checkpoint and check its signature; prove it consistent with the
checkpoint stored by the previous run; download every event the key may see, from the first, up
to the new tree size, and recompute its chain hash and Merkle leaf; check that the events under
the stored checkpoint are still those that were proven, and prove the others in the new tree;
then store the new checkpoint. A consistent tree alone says nothing of the events the service
serves: an event edited under a checkpoint, or taken out of a country's sight, keeps the tree as
it was, and is caught only by looking at the events again.

- A key that sees all of the log rebuilds the tree from the events themselves and compares its
  roots with both checkpoints': a page of events a request, no proof an event (a log of
  thousands of events ran into the rate limit with one each).
- A key that sees part of it (a country's auditor) proves each new event with its inclusion
  proof, and compares the events it had proven with a digest of them kept in the state file.

Any failure names its reason and leaves the state file as it was, so the evidence (the old
checkpoint, signed by the log) is kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx

from app.audit import merkle
from app.audit.canonical import canonical_json
from app.audit.notes import Checkpoint, NoteError, Verifier

PAGE = 1000

MAX_RETRY_AFTER_S = 300.0
"""How long a run waits when the service says "too many requests, retry after N s" (each time)
before it gives up: a country's auditor with many events asks a proof for each, beyond the
per-principal rate limit."""


MAX_REFUSALS = 100
"""429s in a row for one request before a run gives up: a service that always says "retry" is
not answering."""


class VerificationFailed(Exception):
    """The log contradicts itself or what this verifier saw before: its message is the reason."""


class CannotVerify(Exception):
    """The service could not be asked (down, refusing the key, over its rate limit for longer
    than :data:`MAX_RETRY_AFTER_S`), or the state file cannot be read: nothing is proven either
    way, and the state is kept."""


@dataclass(frozen=True)
class Seen:
    """The events a key that sees part of the log has proven, all under its stored checkpoint:
    how many, and a SHA-256 over each one's seq (8 bytes, big-endian) and leaf hash, in order."""

    events: int
    digest: str


class Tally:
    """A :class:`Seen` being counted, event by event."""

    def __init__(self) -> None:
        self._hash, self.events = hashlib.sha256(), 0

    def add(self, seq: int, leaf: bytes) -> None:
        self._hash.update(seq.to_bytes(8, "big") + leaf)
        self.events += 1

    def seen(self) -> Seen:
        return Seen(self.events, self._hash.hexdigest())


@dataclass(frozen=True)
class State:
    """What a verifier keeps between runs: the last checkpoint it accepted, verbatim, and, for a
    key that sees part of the log, the events it had proven under it."""

    checkpoint: str
    seen: Seen | None = None

    @classmethod
    def load(cls, path: Path) -> State | None:
        """None when there is no file yet; :class:`CannotVerify` for a file that is not a state."""
        if not path.parent.is_dir():
            raise CannotVerify(f"no folder {path.parent} for the state file")
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
            seen = stored.get("seen")
            state = cls(stored["checkpoint"], Seen(int(seen["events"]), str(seen["digest"])) if seen else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CannotVerify(f"{path} is not a verifier's state file ({type(error).__name__}: {error})") from None
        if not isinstance(state.checkpoint, str):
            raise CannotVerify(f"{path} is not a verifier's state file (its checkpoint is not a signed note)")
        return state

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the old state or the new, never half of one."""
        stored: dict[str, Any] = {"checkpoint": self.checkpoint}
        if self.seen is not None:
            stored["seen"] = {"events": self.seen.events, "digest": self.seen.digest}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(stored, indent=1) + "\n")
        os.replace(temporary, path)


@dataclass(frozen=True)
class Outcome:
    previous_size: int | None
    checkpoint: Checkpoint
    events_checked: int


def _ask(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    """GET ``path``, waiting as long as the service's ``Retry-After`` says when it answers 429
    (in seconds; up to :data:`MAX_RETRY_AFTER_S` each time, :data:`MAX_REFUSALS` times in a row)."""
    for _ in range(MAX_REFUSALS):
        response = client.get(path, params=params)
        if response.status_code != 429:
            return response
        told = response.headers.get("Retry-After", "1")
        wait_s = float(told) if told.isdigit() else math.nan
        if not 0 <= wait_s <= MAX_RETRY_AFTER_S:
            raise CannotVerify(f"GET {path}: rate limited, to retry after {told!r}")
        time.sleep(wait_s)
    raise CannotVerify(f"GET {path}: rate limited {MAX_REFUSALS} times in a row")


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


def open_stored(verifier: Verifier, note: str) -> Checkpoint:
    """The checkpoint of the state file, which an earlier run accepted."""
    try:
        return open_checkpoint(verifier, note)
    except VerificationFailed as error:
        raise VerificationFailed(
            f"the state file's checkpoint does not open with this key ({error}): another log's, or the file was altered"
        ) from None


def check_consistency(client: httpx.Client, old: Checkpoint, new: Checkpoint) -> None:
    if new.size < old.size:
        raise VerificationFailed(f"inconsistent tree: it shrank from {old.size} to {new.size} events")
    proof = _get(client, "/v1/audit/proof/consistency", **{"from": old.size, "to": new.size})
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, _decode(proof["hashes"]))
    except merkle.ProofError as error:
        raise VerificationFailed(f"inconsistent tree: {error} (the log changed what it had signed)") from None


def listed_events(client: httpx.Client, after: int, up_to: int) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The events the key may see with ``after < seq <= up_to``, each with its leaf hash and a
    content that hashes to its ``hash``. Their seqs must rise strictly, page after page, as the
    API documents: an event listed twice or out of order could be one never proven, slipped in
    among those that were, and a page that does not advance would be asked for again for ever."""
    while after < up_to:
        page = _get(client, "/v1/audit/events", after=after, limit=PAGE)
        events, next_after = page["events"], page["next_after"]
        for event in events:
            seq = event["seq"]
            if type(seq) is not int or seq <= after:
                raise VerificationFailed(f"the listing is not in seq order: {seq!r} after {after}")
            if seq > up_to:
                return
            canonical = canonical_json(event)
            if hashlib.sha256(canonical).hexdigest() != event["hash"]:
                raise VerificationFailed(f"event {seq}: its hash is not that of its content")
            after = seq
            yield event, merkle.leaf_hash(canonical)
        if next_after is None:
            return
        if not events or next_after != after:
            raise VerificationFailed(f"the listing does not advance: next after {next_after!r}, last listed {after}")


def check_inclusion(client: httpx.Client, seq: int, leaf: bytes, checkpoint: Checkpoint) -> None:
    response = _ask(client, "/v1/audit/proof/inclusion", seq=seq, tree_size=checkpoint.size)
    if response.status_code == 404:
        raise VerificationFailed(f"missing event: {seq} was listed but the log has no proof of it")
    if response.status_code != 200:
        raise CannotVerify(f"inclusion proof of event {seq} answered {response.status_code}")
    try:
        merkle.verify_inclusion(seq - 1, checkpoint.size, leaf, _decode(response.json()["hashes"]), checkpoint.root)
    except merkle.ProofError as error:
        raise VerificationFailed(
            f"missing event: {seq} as listed is not in the signed tree of {checkpoint.size} ({error})"
        ) from None


def name_the_changed(client: httpx.Client, checkpoint: Checkpoint, after: int, failure: str) -> NoReturn:
    """Raise ``failure``, a verdict already reached, naming if it can the first event listed
    after ``after`` that is not in ``checkpoint``'s tree (proven one by one: the naming is best
    effort, and a service that stops answering now does not turn the verdict into "could not
    verify")."""
    try:
        for event, leaf in listed_events(client, after, checkpoint.size):
            check_inclusion(client, event["seq"], leaf, checkpoint)
    except (CannotVerify, httpx.HTTPError):
        pass
    raise VerificationFailed(failure)


def check_listed(client: httpx.Client, seen: Seen | None, old: Checkpoint | None, new: Checkpoint) -> tuple[int, Seen]:
    """A key that sees part of the log: the events under ``old`` as they were proven (``seen``),
    compared before anything else is proven; the others each proven in ``new`` by its inclusion
    proof. Without ``seen`` (a first run, or a state file of an earlier version) every event is
    proven."""
    proven = old.size if old is not None and seen is not None else 0
    tally, compared, checked = Tally(), seen is None, 0

    def compare() -> None:
        if seen is not None and old is not None and tally.seen() != seen:
            name_the_changed(
                client,
                old,
                0,
                f"missing event: of the {seen.events} events proven under the stored checkpoint, "
                f"{tally.events} are listed now, and not all the same: an event was changed or taken out of "
                "this key's sight",
            )

    for event, leaf in listed_events(client, 0, new.size):
        seq = event["seq"]
        if seq > proven:
            if not compared:  # the seqs rise: every event proven before has been listed
                compare()
                compared = True
            check_inclusion(client, seq, leaf, new)
            checked += 1
        tally.add(seq, leaf)
    if not compared:
        compare()
    return checked, tally.seen()


def check_whole_log(client: httpx.Client, old: Checkpoint | None, new: Checkpoint) -> int:
    """A key that sees every event: the tree rebuilt from them, leaf by leaf, must have both
    checkpoints' roots, and no seq may be missing from the listing. When a root differs, the
    events are proven one by one to name the first that is not in that tree."""
    tree = merkle.CompactRange()
    for event, leaf in listed_events(client, 0, new.size):
        if event["seq"] != tree.size + 1:
            break
        tree.append(leaf)
        if old is not None and tree.size == old.size and tree.root() != old.root:
            name_the_changed(
                client, old, 0, f"the events listed do not make the tree of the stored checkpoint ({old.size})"
            )
    if tree.size < new.size:
        raise VerificationFailed(
            f"missing event: {tree.size + 1} is in the tree but not in the listing "
            "(--whole-log needs the key of an auditor without a country)"
        )
    if tree.root() != new.root:  # those under the stored checkpoint made its tree: the change is after
        name_the_changed(client, new, old.size if old else 0, "the events listed do not make the signed tree")
    return tree.size


def verify_remote(client: httpx.Client, verifier: Verifier, state_path: Path, whole_log: bool = False) -> Outcome:
    """One verification run (module docstring). ``whole_log``: the key sees every event (an
    auditor without a country), so every seq up to the tree size must be listed."""
    state = State.load(state_path)
    try:
        note = _get(client, "/v1/audit/checkpoint")["checkpoint"]
        new = open_checkpoint(verifier, note)
        old = open_stored(verifier, state.checkpoint) if state else None
        if old:
            check_consistency(client, old, new)
        if whole_log:
            checked, seen = check_whole_log(client, old, new), None
        else:
            checked, seen = check_listed(client, state.seen if state else None, old, new)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as error:  # JSON, base64 included
        raise CannotVerify(
            f"an answer of the service is not as the API documents it ({type(error).__name__}: {error})"
        ) from None
    State(note, seen).save(state_path)
    return Outcome(old.size if old else None, new, checked)
