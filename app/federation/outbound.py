"""The requesting node's side: the part of a search that goes to peers, and what comes back.

A country of a case with no gallery here but a live peer of that country, and an agreement in
force here, is searched at that peer: the probes (opened from the search's sealed copy), their
format, the FPIR, the list length, the case's deadline and legal basis and a pseudonymous case
reference are sent, signed; never the case file. Each country's part is an outbound search with
its own status; the candidates the peer reports, and their review states, are kept as remote
candidates, and a confirmation the peer reports identifies the case.

A peer that does not answer makes its country ``peer_unavailable`` (the other countries still
answer); with ``retry`` the request is resent (same request id: the peer runs it once) until the
deadline. A search the peer accepted is followed by its signed notifications, and polled as the
fallback (app/federation/notifier.py), so that a peer down for a while loses nothing."""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseStatus
from app.cases.service import move, touched_countries
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.federation.channel import Exchange, PeerChannel, PeerUnavailable
from app.federation.exceptions import UnknownRemoteSearch
from app.federation.models import OutboundSearch, Peer, RemoteCandidate
from app.federation.signatures import Proof
from app.federation.wire import SEARCHES_PATH, FederatedSearchRequest, FederatedSearchState
from app.galleries.templates import from_bytes
from app.matching.models import Search
from app.matching.probes import open_probes

log = logging.getLogger(__name__)

SENDING, REFUSED, UNAVAILABLE = "sending", "refused", "unavailable"
PEER_UNAVAILABLE = "peer_unavailable"
FINAL = {"done", "failed", "expired"}


def peers_for(session: Session, countries: list[str]) -> dict[str, Peer]:
    """The live peer of each of ``countries`` that has one."""
    rows = session.scalars(select(Peer).where(Peer.country.in_(countries), Peer.removed_at.is_(None)))
    return {peer.country: peer for peer in rows}


@dataclass(frozen=True)
class Prepared:
    """An outbound search written, and the body of the request that asks its peer for it."""

    outbound_id: int
    peer: Peer
    payload: dict[str, Any]


def open_outbound(
    sessions: Sessions, channel: PeerChannel, search_id: int, countries: list[str], retry: bool, wait_ms: int
) -> list[Prepared]:
    """The outbound searches of ``search_id`` for those of ``countries`` a peer holds and that
    were not asked for it already (a request resent with its idempotency key), written before
    anything is sent, so that a crash before the answer leaves them to the poller; each
    with its request (asking for an answer within ``wait_ms``), built in the same transaction."""
    with transaction(sessions) as session:
        search = session.get(Search, search_id, with_for_update=True)  # a resend's request waits for this one's rows
        assert search is not None
        asked = set(session.scalars(select(OutboundSearch.country).where(OutboundSearch.search_id == search_id)))
        peers = {c: peer for c, peer in peers_for(session, countries).items() if c not in asked}
        rows = [
            OutboundSearch(
                search_id=search_id,
                case_id=search.case_id,
                peer_id=peer.id,
                country=peer.country,
                request_id=uuid.uuid4().hex,
                status=SENDING,
                retry=retry,
                deadline=search.deadline,
            )
            for peer in peers.values()
        ]
        session.add_all(rows)
        session.flush()
        return [Prepared(row.id, peers[row.country], _request(session, channel, row, wait_ms)) for row in rows]


def send(
    sessions: Sessions, channel: PeerChannel, outbound_id: int, wait_ms: int, timeout_s: float | None = None
) -> None:
    """Resend an outbound search to its peer (the same request id), asking for its answer within
    ``wait_ms``, and apply the answer."""
    with sessions() as session:
        outbound = session.get(OutboundSearch, outbound_id)
        assert outbound is not None
        peer = session.get(Peer, outbound.peer_id)
        assert peer is not None
        prepared = Prepared(outbound_id, peer, _request(session, channel, outbound, wait_ms))
    deliver(sessions, channel, prepared, timeout_s)


def deliver(sessions: Sessions, channel: PeerChannel, prepared: Prepared, timeout_s: float | None = None) -> None:
    """Send a prepared request and apply the answer; no answer within ``timeout_s`` is
    peer_unavailable."""
    try:
        exchange = channel.send(prepared.peer, "search", "POST", SEARCHES_PATH, prepared.payload, timeout_s)
    except PeerUnavailable as failure:
        _unavailable(sessions, prepared.outbound_id, failure.reason)
        return
    _answered(sessions, prepared.outbound_id, exchange, "request")


def _request(session: Session, channel: PeerChannel, outbound: OutboundSearch, wait_ms: int) -> dict[str, Any]:
    search = session.get(Search, outbound.search_id)
    case = session.get(Case, outbound.case_id)
    assert search is not None and case is not None
    probes = from_bytes([open_probes(session, search.id, search.probes)], search.dimension)
    request = FederatedSearchRequest(
        request_id=outbound.request_id,
        requesting_country=channel.node.country,
        case_reference=channel.node.case_reference(case.id),
        deadline=case.deadline,
        legal_basis=case.legal_basis,
        modality=search.modality,
        model=search.model,
        dimension=search.dimension,
        metric=search.metric,
        probes_b64=[base64.b64encode(probe.astype("<f4").tobytes()).decode() for probe in probes],
        target_fpir=search.target_fpir,
        max_candidates=search.max_candidates,
        wait_ms=wait_ms,
    )
    return request.model_dump(mode="json")


def _unavailable(sessions: Sessions, outbound_id: int, reason: str) -> None:
    """The peer gave no valid answer: its country is peer_unavailable; a search never accepted
    and not to be retried ends unavailable."""
    with transaction(sessions) as session:
        outbound = session.get(OutboundSearch, outbound_id)
        assert outbound is not None
        outbound.error = PEER_UNAVAILABLE
        outbound.updated_at = utcnow()
        if outbound.status == SENDING and (not outbound.retry or outbound.deadline <= utcnow()):
            outbound.status, outbound.settled = UNAVAILABLE, True
    log.warning("peer unavailable", extra={"event": {"outbound_search": outbound_id, "reason": reason}})


def _answered(sessions: Sessions, outbound_id: int, exchange: Exchange, how: str) -> None:
    """Apply a verified answer: a state (accepted, polled), or a refusal; audited with both
    signatures."""
    with transaction(sessions) as session:
        outbound = session.get(OutboundSearch, outbound_id)
        assert outbound is not None
        signatures = {"own_signature": exchange.sent, "peer_signature": exchange.answer}
        if exchange.status in (200, 202):
            state = FederatedSearchState.model_validate(exchange.body)
            apply_state(session, outbound, state, how, signatures)
            return
        code = str(exchange.body.get("error", {}).get("code", f"http_{exchange.status}"))
        if exchange.status == 429 or outbound.origin_ref is not None:  # transient, or already accepted
            outbound.error = code
        else:
            outbound.status, outbound.error, outbound.settled = REFUSED, code, True
        outbound.updated_at = utcnow()
        _audit(session, outbound, Action.FEDERATION_REQUEST_SEND, code, {"how": how}, signatures)


def apply_state(
    session: Session, outbound: OutboundSearch, state: FederatedSearchState, how: str, signatures: dict[str, Proof]
) -> None:
    """What the peer reports of its search: status, candidates and their review states (and a
    confirmed one's attributes); a confirmation identifies the case, if still open."""
    if outbound.origin_ref is not None and outbound.origin_ref != state.reference:
        raise UnknownRemoteSearch("the answer is about another search")
    outbound.origin_ref = state.reference
    outbound.status, outbound.error = state.status, None
    outbound.updated_at = utcnow()
    known = {
        c.origin_candidate_id: c
        for c in session.scalars(select(RemoteCandidate).where(RemoteCandidate.outbound_search_id == outbound.id))
    }
    for reported in state.candidates:
        candidate = known.get(reported.id) or RemoteCandidate(
            outbound_search_id=outbound.id, origin_candidate_id=reported.id
        )
        candidate.reference_id, candidate.rank, candidate.score = reported.reference_id, reported.rank, reported.score
        candidate.band, candidate.review_state = reported.band, reported.review_state
        candidate.attributes, candidate.updated_at = reported.attributes, utcnow()
        session.add(candidate)
    outbound.settled = state.status in FINAL and state.case_status != CaseStatus.OPEN.value
    action = Action.FEDERATION_REQUEST_SEND if how == "request" else Action.FEDERATION_STATE_RECEIVE
    details = {
        "how": how,
        "status": state.status,
        "candidates": [{"id": c.id, "review_state": c.review_state} for c in state.candidates],
    }
    _audit(session, outbound, action, "ok", details, signatures)
    confirmed = [c for c in state.candidates if c.review_state == "confirmed"]
    if confirmed:
        case = session.scalars(select(Case).where(Case.id == outbound.case_id).with_for_update()).one()
        if case.status == CaseStatus.OPEN.value:
            move(
                session,
                None,
                case,
                CaseStatus.IDENTIFIED,
                f"candidate {confirmed[0].id} confirmed by {outbound.country}",
            )


def _audit(
    session: Session,
    outbound: OutboundSearch,
    action: Action,
    outcome: str,
    details: dict[str, Any],
    signatures: dict[str, Proof],
) -> None:
    case = session.get(Case, outbound.case_id)
    assert case is not None
    audit.append(
        session,
        None,
        action,
        f"case/{outbound.case_id}/search/{outbound.search_id}/outbound/{outbound.id}",
        touched_countries(case),
        outcome=outcome,
        details={
            "peer": outbound.country,
            "request_id": outbound.request_id,
            **details,
            **{name: proof.as_details() for name, proof in signatures.items()},
        },
    )


def receive_notification(sessions: Sessions, peer: Peer, proof: Proof, state: FederatedSearchState) -> None:
    """A peer's signed notification of its search's new state (404 for a search this node did
    not send it)."""
    with transaction(sessions) as session:
        outbound = session.scalar(
            select(OutboundSearch).where(
                OutboundSearch.peer_id == peer.id, OutboundSearch.origin_ref == state.reference
            )
        )
        if outbound is None or outbound.request_id != state.request_id:
            raise UnknownRemoteSearch(f"no search {state.reference} was sent to {peer.country}")
        apply_state(session, outbound, state, "notification", {"peer_signature": proof})


def poll(sessions: Sessions, channel: PeerChannel, outbound_id: int) -> None:
    """Follow an outbound search not settled: resend one never accepted (if it is to be
    retried), ask the peer for the state of an accepted one; past the deadline, stop."""
    with sessions() as session:
        outbound = session.get(OutboundSearch, outbound_id)
        assert outbound is not None
        peer = session.get(Peer, outbound.peer_id)
        assert peer is not None
        origin_ref, deadline = outbound.origin_ref, outbound.deadline
    if deadline <= utcnow():
        with transaction(sessions) as session:
            outbound = session.get(OutboundSearch, outbound_id)
            assert outbound is not None
            outbound.settled = True
            if outbound.status == SENDING:
                outbound.status = UNAVAILABLE
        return
    if origin_ref is None:
        send(sessions, channel, outbound_id, 0)
        return
    try:
        exchange = channel.send(peer, "poll", "GET", f"{SEARCHES_PATH}/{origin_ref}", None)
    except PeerUnavailable as failure:
        _unavailable(sessions, outbound_id, failure.reason)
        return
    _answered(sessions, outbound_id, exchange, "poll")


def to_follow(sessions: Sessions) -> list[int]:
    """Outbound searches the poller follows: not settled, and either accepted or to be retried."""
    with sessions() as session:
        return list(
            session.scalars(
                select(OutboundSearch.id).where(
                    OutboundSearch.settled.is_(False),
                    (OutboundSearch.origin_ref.is_not(None)) | (OutboundSearch.retry.is_(True)),
                )
            )
        )
