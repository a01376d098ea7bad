"""Identification across the federation: the local search as always (app/matching/service.py),
then, for each country of the case with no gallery here but a live peer, the same probes sent
to that peer (app/federation/outbound.py), to every peer at once. The answer shows both: local
candidates, and per peer country its status and the candidates it reported."""

from __future__ import annotations

import time
from dataclasses import dataclass

from anyio import create_task_group, to_thread

from app.db.session import Sessions
from app.federation import outbound
from app.federation.channel import PeerChannel
from app.matching import service as matching
from app.matching.views import SearchView
from app.principals.models import Principal

NO_GALLERY = "no_gallery"

ANSWER_MARGIN_S = 2.0
"""What a peer has, beyond the wait it was told, to answer (accept the search, write it, sign
the state it has): milliseconds on a national link, seconds on a loaded node. A peer silent
longer is peer_unavailable for this answer (and resent, if asked, by the poller)."""


@dataclass(frozen=True)
class Searching:
    """The parts of this node an identification runs on, and its channel to peers (None: in no
    federation)."""

    matching: matching.Matching
    channel: PeerChannel | None


async def identify(
    parts: Searching,
    actor: Principal,
    case_id: int,
    request: matching.IdentificationRequest,
    wait_s: float,
    retry_unavailable_peers: bool,
) -> SearchView:
    """Search locally, then at the peers of the countries without a local gallery, all at once:
    each is asked to answer within what is left of ``wait_s``, and one that does not (plus
    :data:`ANSWER_MARGIN_S`) is ``peer_unavailable`` (retried until the deadline with
    ``retry_unavailable_peers``), so that a slow peer delays no other country's answer."""
    started = time.monotonic()
    view = await matching.identify(parts.matching, actor, case_id, request, wait_s)
    remote = [entry["country"] for entry in view.skipped if entry["reason"] == NO_GALLERY]
    if parts.channel is None or not remote or view.modalities is not None:
        return view  # a multi-modal search is fused here, over local galleries only (README)
    channel = parts.channel
    left_s = max(0.0, wait_s - (time.monotonic() - started))
    prepared = await to_thread.run_sync(
        outbound.open_outbound,
        parts.matching.sessions,
        channel,
        view.id,
        remote,
        retry_unavailable_peers,
        int(left_s * 1000),
    )
    if not prepared:
        return view
    async with create_task_group() as peers:
        for one in prepared:
            peers.start_soon(_ask, parts.matching.sessions, channel, one, left_s)
    return await to_thread.run_sync(matching.written_view, parts.matching.readers, view.id)


async def _ask(sessions: Sessions, channel: PeerChannel, prepared: outbound.Prepared, wait_s: float) -> None:
    """One peer's part, in a worker thread of its own."""
    await to_thread.run_sync(outbound.deliver, sessions, channel, prepared, wait_s + ANSWER_MARGIN_S)
