"""Identification across the federation: the local search as always (app/matching/service.py),
then, for each country of the case with no gallery here but a live peer, the same probes sent
to that peer (app/federation/outbound.py). The answer shows both: local candidates, and per
peer country its status and the candidates it reported."""

from __future__ import annotations

from dataclasses import dataclass

from anyio import to_thread

from app.core.config import Settings
from app.db.session import Sessions
from app.federation import outbound
from app.federation.channel import PeerChannel
from app.matching import service as matching
from app.matching.executor import SearchExecutor
from app.matching.models import Search
from app.matching.scheduler import Scheduler
from app.matching.views import SearchView, search_views
from app.principals.models import Principal

NO_GALLERY = "no_gallery"


@dataclass(frozen=True)
class Searching:
    """The parts of this node an identification runs on; ``channel`` None: in no federation."""

    sessions: Sessions
    readers: Sessions
    scheduler: Scheduler
    executor: SearchExecutor
    settings: Settings
    channel: PeerChannel | None


async def identify(
    parts: Searching,
    actor: Principal,
    case_id: int,
    request: matching.IdentificationRequest,
    wait_s: float,
    retry_unavailable_peers: bool,
) -> SearchView:
    """Search locally, then at the peers of the countries without a local gallery. The peers
    are asked within what is left of ``wait_s``; one that does not answer in time is
    ``peer_unavailable`` (retried until the deadline with ``retry_unavailable_peers``)."""
    view = await matching.identify(
        parts.sessions,
        parts.readers,
        parts.scheduler,
        parts.executor,
        parts.settings,
        actor,
        case_id,
        request,
        wait_s,
    )
    remote = [entry["country"] for entry in view.skipped if entry["reason"] == NO_GALLERY]
    if parts.channel is None or not remote or view.modalities is not None:
        return view  # a multi-modal search is fused here, over local galleries only (README)
    channel = parts.channel
    outbound_ids = await to_thread.run_sync(
        outbound.open_outbound, parts.sessions, view.id, remote, retry_unavailable_peers
    )
    if not outbound_ids:
        return view
    for outbound_id in outbound_ids:
        await to_thread.run_sync(outbound.send, parts.sessions, channel, outbound_id, int(wait_s * 1000))
    return await to_thread.run_sync(_reread, parts.sessions, view.id)


def _reread(sessions: Sessions, search_id: int) -> SearchView:
    """The search as now written, remote parts included (not audited as a read: the caller's
    own submission answered)."""
    with sessions() as session:
        search = session.get(Search, search_id)
        assert search is not None
        [view] = search_views(session, [search])
        return view
