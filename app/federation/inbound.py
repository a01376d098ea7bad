"""The origin node's side: a peer's search request decided here, run here, reviewed here.

This node checks its own agreements (the receiving country is the peer's registered country; the
modality; today), opens its own remote case under the pseudonymous reference the peer sent, and
runs the search through its own queue, earliest deadline first by the deadline sent, exactly as
a local agency's: its consuls review the candidates on their own API and review pages. The peer
is told candidate ids, reference ids, ranks, scores, bands and review states, and a confirmed
candidate's identity attributes; what it was told last is kept, so that a change is notified
once (app/federation/notifier.py) and a poll in between is answered from the same state.

A request is idempotent by its ``request_id``: a resend after a lost answer, or after a crash of
this node at any point, returns the search already accepted, so nothing is run twice and nothing
is half-applied (app/federation/idempotency.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import anyio
from anyio import to_thread
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.agreements.service import countries_in_force
from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case, CaseStatus
from app.cases.service import remote_case
from app.db.base import utcnow
from app.db.session import Sessions, engine_of, transaction
from app.federation.exceptions import NoAgreement, RequestInProgress, UnknownRemoteSearch, WrongCountry
from app.federation.idempotency import Step, claim, link, take
from app.federation.models import InboundSearch, Peer
from app.federation.node import NodeIdentity
from app.federation.signatures import Proof
from app.federation.wire import FederatedCandidate, FederatedSearchRequest, FederatedSearchState
from app.galleries.models import Record
from app.galleries.templates import EncodedTemplates
from app.matching import service as matching
from app.matching.models import Candidate, ReviewState, Search, SearchStatus
from app.principals.models import Principal
from matcher import TemplateFormat

log = logging.getLogger(__name__)

ENDED = {SearchStatus.DONE.value, SearchStatus.FAILED.value, SearchStatus.EXPIRED.value}
SETTLED_REVIEW = {ReviewState.CONFIRMED.value, ReviewState.REJECTED.value}


async def receive_search(
    parts: matching.Matching, node: NodeIdentity, peer: Peer, proof: Proof, request: FederatedSearchRequest
) -> FederatedSearchState:
    """Accept (or refuse) a peer's search and run it, once (app/federation/idempotency.py),
    answering its state within ``request.wait_ms`` (queued or running beyond). A resend while
    another process still runs it waits as long for that one's answer, then is told to come back
    (503 request_in_progress)."""
    probes = matching.ProbeSet(
        request.modality,
        TemplateFormat(request.model, request.dimension, request.metric),
        EncodedTemplates(base64=request.probes_b64),
    )
    identification = matching.IdentificationRequest(
        probe_sets=(probes,), max_candidates=request.max_candidates, target_fpir=request.target_fpir
    )
    taking = _Taking(parts, identification, request.wait_ms / 1000)
    inbound_id, principal, step = await to_thread.run_sync(_accept, taking, node, peer, proof, request)
    give_up = time.monotonic() + taking.wait_s
    while step is Step.WAIT:
        if time.monotonic() >= give_up:
            raise RequestInProgress("this request is being run by another process here: resend it later")
        await anyio.sleep(CLAIM_CHECK_S)
        step = await to_thread.run_sync(_take, taking, inbound_id)
    search_id = None
    if step is Step.RUN:
        case_id = await to_thread.run_sync(_case_of, parts.readers, inbound_id)
        view = await matching.identify(parts, principal, case_id, identification, taking.wait_s)
        search_id = view.id
    return await to_thread.run_sync(_answer, parts.sessions, peer, proof, inbound_id, "answer", search_id)


CLAIM_CHECK_S = 0.1
"""How often a resend waiting on another process's run looks for its link."""


@dataclass(frozen=True)
class _Taking:
    """What deciding whether to run a request needs: this process's identity, the request."""

    parts: matching.Matching
    identification: matching.IdentificationRequest
    wait_s: float

    @property
    def owner(self) -> str:
        return self.parts.executor.leases.owner

    @property
    def single_process(self) -> bool:
        return engine_of(self.parts.sessions).dialect.name == "sqlite"


def _take(taking: _Taking, inbound_id: int) -> Step:
    with transaction(taking.parts.sessions) as session:
        inbound = session.scalars(select(InboundSearch).where(InboundSearch.id == inbound_id).with_for_update()).one()
        return take(
            session,
            inbound,
            taking.owner,
            taking.single_process,
            taking.identification,
            taking.parts.settings.max_probes,
            taking.wait_s,
        )


def _accept(
    taking: _Taking, node: NodeIdentity, peer: Peer, proof: Proof, request: FederatedSearchRequest
) -> tuple[int, Principal, Step]:
    """The inbound search (new, or the one this request id already made) and what to do with it.
    A refusal is audited, with the peer's signature, before it is answered."""
    if request.requesting_country != peer.country:
        raise WrongCountry(f"this peer is trusted for {peer.country} only, not {request.requesting_country}")
    details = {
        "peer": peer.country,
        "request_id": request.request_id,
        "case_reference": request.case_reference,
        "modality": request.modality,
        "probe_count": len(request.probes_b64),
        "request_signature": proof.as_details(),
    }
    countries = [peer.country, node.country]
    sessions = taking.parts.sessions
    with taking.parts.readers() as session:
        principal = session.get(Principal, peer.principal_id)
        assert principal is not None
        session.expunge(principal)
        existing = session.scalar(
            select(InboundSearch.id).where(
                InboundSearch.peer_id == peer.id, InboundSearch.request_id == request.request_id
            )
        )
    if existing is not None:
        return existing, principal, _take(taking, existing)
    try:
        with transaction(sessions) as session:
            if countries_in_force(session, peer.country, [node.country], request.modality, utcnow().date()):
                case = remote_case(
                    session,
                    principal,
                    request.case_reference,
                    request.deadline,
                    node.country,
                    request.legal_basis.value,
                )
                inbound = InboundSearch(peer_id=peer.id, request_id=request.request_id, case_id=case.id)
                claim(inbound, taking.owner, taking.wait_s)
                session.add(inbound)
                session.flush()
                audit.append(
                    session,
                    principal,
                    Action.FEDERATION_REQUEST_RECEIVE,
                    f"case/{case.id}/inbound/{inbound.id}",
                    countries,
                    details=details,
                )
                return inbound.id, principal, Step.RUN
            audit.append(
                session,
                principal,
                Action.FEDERATION_REQUEST_RECEIVE,
                f"peer/{peer.id}/request/{request.request_id}",
                countries,
                outcome=NoAgreement.code,
                details=details,
            )
    except IntegrityError:  # the same request, resent while this one was being accepted
        return _accept(taking, node, peer, proof, request)
    raise NoAgreement(f"no agreement in force lets {peer.country} search {node.country}'s {request.modality} galleries")


def _case_of(sessions: Sessions, inbound_id: int) -> int:
    with sessions() as session:
        inbound = session.get(InboundSearch, inbound_id)
        assert inbound is not None
        return inbound.case_id


def _answer(
    sessions: Sessions, peer: Peer, proof: Proof, inbound_id: int, how: str, ran: int | None
) -> FederatedSearchState:
    """What the peer is answered of its search (404 for another peer's), audited with the peer's
    signature and remembered as delivered in the same transaction, so that the notifier does not
    send it again; ``ran``, the search this process ran for it, is linked first. A resend that
    took the request over after this process's claim lapsed (a database stalled past a batch's
    end) ran it twice: the one linked first answers."""
    with transaction(sessions) as session:
        inbound = session.scalar(select(InboundSearch).where(InboundSearch.id == inbound_id).with_for_update())
        if inbound is None or inbound.peer_id != peer.id:
            raise UnknownRemoteSearch(f"search {inbound_id} not found")
        if ran is not None and inbound.search_id is None:
            link(inbound, ran)
        elif ran is not None:
            log.warning("request run twice", extra={"event": {"inbound_search": inbound_id, "search": ran}})
        state = state_of(session, inbound)
        record_delivery(session, inbound, state, how, {"peer_signature": proof})
        return state


def state_of(session: Session, inbound: InboundSearch) -> FederatedSearchState:
    [(state, _)] = states_of(session, InboundSearch.id == inbound.id).values()
    return state


def states_of(session: Session, which: ColumnElement[bool]) -> dict[int, tuple[FederatedSearchState, str | None]]:
    """The state of each inbound search ``which`` selects, with the digest of what its peer was
    told last, by inbound search id: three queries however many searches (the notifier reads
    every search not settled, on every pass)."""
    searches = session.execute(
        select(InboundSearch.id, InboundSearch.request_id, InboundSearch.notified_digest)
        .add_columns(Search.status, Search.error, Case.status)
        .join(Case, Case.id == InboundSearch.case_id)
        .outerjoin(Search, Search.id == InboundSearch.search_id)
        .where(which)
    ).all()
    reported = session.execute(
        select(InboundSearch.id, Candidate)
        .join(Candidate, Candidate.search_id == InboundSearch.search_id)
        .where(which)
        .order_by(Candidate.rank)
    ).all()
    attributes: dict[int, dict[str, str]] = dict(
        session.execute(
            select(Record.id, Record.attributes)
            .join(Candidate, Candidate.record_id == Record.id)
            .join(InboundSearch, InboundSearch.search_id == Candidate.search_id)
            .where(which, Candidate.review_state == ReviewState.CONFIRMED.value)
        ).all()
    )
    candidates: dict[int, list[FederatedCandidate]] = {}
    for inbound_id, c in reported:
        candidates.setdefault(inbound_id, []).append(
            FederatedCandidate(
                id=c.id,
                reference_id=c.reference_id,
                rank=c.rank,
                score=c.score,
                band=c.band,
                review_state=c.review_state,
                attributes=attributes.get(c.record_id) if c.record_id else None,
            )
        )
    return {
        inbound_id: (
            FederatedSearchState(
                reference=inbound_id,
                request_id=request_id,
                status=status or SearchStatus.QUEUED.value,
                error=error,
                case_status=case_status,
                candidates=candidates.get(inbound_id, []),
            ),
            notified,
        )
        for inbound_id, request_id, notified, status, error, case_status in searches
    }


def digest(state: FederatedSearchState) -> str:
    """What identifies a state the peer was told, to tell it only of changes."""
    return hashlib.sha256(json.dumps(state.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def settled(state: FederatedSearchState) -> bool:
    """Nothing about it can change any more: its case is over, or its search ended and every
    candidate was confirmed or rejected."""
    if state.case_status != CaseStatus.OPEN.value:
        return state.status in ENDED
    return state.status in ENDED and all(c.review_state in SETTLED_REVIEW for c in state.candidates)


def answer_poll(sessions: Sessions, peer: Peer, proof: Proof, inbound_id: int) -> FederatedSearchState:
    """A peer asks for its search's state (the fallback of notifications)."""
    return _answer(sessions, peer, proof, inbound_id, "poll", None)


def record_delivery(
    session: Session, inbound: InboundSearch, state: FederatedSearchState, how: str, signatures: dict[str, Proof]
) -> None:
    """The peer was given ``state`` (answered, notified, or answered a poll): audited with the signatures
    of the exchange, and remembered so that the same state is not notified again."""
    inbound.notified_digest = digest(state)
    inbound.settled = settled(state)
    peer = session.get(Peer, inbound.peer_id)
    assert peer is not None
    audit.append(
        session,
        None,
        Action.FEDERATION_STATE_SEND,
        f"case/{inbound.case_id}/inbound/{inbound.id}",
        [peer.country],
        details={
            "how": how,
            "peer": peer.country,
            "status": state.status,
            "case_status": state.case_status,
            "candidates": [{"id": c.id, "review_state": c.review_state} for c in state.candidates],
            "attributes_sent": [c.id for c in state.candidates if c.attributes],
            **{name: proof.as_details() for name, proof in signatures.items()},
        },
    )
