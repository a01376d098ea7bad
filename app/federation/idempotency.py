"""A peer's search request runs once at the origin node, whatever crashes or resends come.

The search is written by the matching queue (at the end of its batch, or queued when the wait
runs out), in a transaction of its own; the inbound search is linked to it just after. Between
the two, a crash would leave a search nobody links, and a resend would run it again. So:

- the process running a request holds a *claim* on its inbound search (its process identity and
  how long it may take: the wait plus a batch's end), and a resend while the claim lives waits
  for the link instead of running anything;
- a claim dies with its process (on SQLite, any claim of another process: one process serves a
  data folder) or when it lapses; a resend then *adopts* the search the dead process wrote but
  did not link (one of the request's remote case, submitted since the request came, linked to no
  request, with the same probes and format) or, when there is none, runs the request itself;
- all of it under the inbound search's row lock, so two resends never both run it."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.federation.models import InboundSearch
from app.galleries.templates import to_bytes
from app.matching.models import Search
from app.matching.probes import open_probes
from app.matching.service import BATCH_END_S, IdentificationRequest


class Step(Enum):
    RUN = "run"
    """This process claimed the request: run its search, then link it."""
    WAIT = "wait"
    """A live process runs it: wait for the link."""
    ANSWER = "answer"
    """Linked: answer its state."""


def take(
    session: Session,
    inbound: InboundSearch,
    owner: str,
    single_process: bool,
    request: IdentificationRequest,
    max_probes: int,
    wait_s: float,
) -> Step:
    """What to do with ``inbound`` (row-locked by the caller's transaction), claiming it for
    ``owner`` when it is to be run here."""
    if inbound.search_id is not None:
        return Step.ANSWER
    now = utcnow()
    alive = inbound.claimed_until is not None and inbound.claimed_until > now
    if alive and not (single_process and inbound.claimed_by != owner):
        return Step.WAIT
    orphan = orphan_of(session, inbound, request, max_probes)
    if orphan is not None:
        link(inbound, orphan)
        return Step.ANSWER
    claim(inbound, owner, wait_s)
    return Step.RUN


def claim(inbound: InboundSearch, owner: str, wait_s: float) -> None:
    """``owner`` runs it: for the wait, and at most a batch's end beyond."""
    inbound.claimed_by = owner
    inbound.claimed_until = utcnow() + timedelta(seconds=wait_s + BATCH_END_S)


def link(inbound: InboundSearch, search_id: int) -> None:
    inbound.search_id = search_id
    inbound.claimed_by, inbound.claimed_until = None, None


def orphan_of(session: Session, inbound: InboundSearch, request: IdentificationRequest, max_probes: int) -> int | None:
    """The search a dead process wrote for ``inbound`` and did not link, if any."""
    linked = select(InboundSearch.search_id).where(InboundSearch.search_id.is_not(None))
    [probe_set] = request.probe_sets  # a peer's request is of one modality
    fmt = probe_set.template_format
    candidates = session.scalars(
        select(Search)
        .where(
            Search.case_id == inbound.case_id,
            Search.submitted_at >= inbound.created_at,
            Search.modality == probe_set.modality,
            Search.model == fmt.model,
            Search.dimension == fmt.dimension,
            Search.id.not_in(linked),
        )
        .order_by(Search.id)
    )
    probes = to_bytes(probe_set.probes.decode(fmt, max_probes, what="probe"))
    for search in candidates:
        if open_probes(session, search.id, search.probes) == probes:
            return search.id
    return None
