from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import Admin, RuntimeDep, SessionsDep
from app.api.openapi import refusal
from app.core.ids import RowId
from app.federation import peers as service
from app.federation.models import Peer
from app.federation.schemas import PeerIn, PeerOut

router = APIRouter(prefix="/v1/peers", tags=["federation"])


@router.post(
    "",
    status_code=201,
    response_model=PeerOut,
    summary="Register a peer node for one country",
    responses={
        409: refusal("duplicate_peer: the country has a peer already; node_not_initialised: no node key yet"),
    },
)
def add_peer(body: PeerIn, actor: Admin, runtime: RuntimeDep) -> Peer:
    """The peer's messages are accepted only when signed by ``public_key``, and only as
    ``country``; this node's searches of ``country`` with no local gallery go to ``url``."""
    return service.add_peer(runtime.sessions, actor, runtime.node, body.country, body.url, body.public_key)


@router.get("", response_model=list[PeerOut], summary="List the peers trusted now")
def list_peers(actor: Admin, sessions: SessionsDep) -> list[Peer]:
    return service.list_peers(sessions)


@router.delete("/{peer_id}", status_code=204, summary="Stop trusting a peer")
def remove_peer(peer_id: RowId, actor: Admin, runtime: RuntimeDep) -> Response:
    service.remove_peer(runtime.sessions, actor, peer_id)
    return Response(status_code=204)
