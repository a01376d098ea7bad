from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RuntimeDep
from app.api.openapi import refusal
from app.federation.exceptions import NodeNotInitialised
from app.federation.node import API_VERSION
from app.federation.schemas import NodeOut

router = APIRouter(prefix="/v1/node", tags=["federation"])


@router.get(
    "",
    response_model=NodeOut,
    summary="This node's identity: country, name, public key",
    responses={409: refusal("node_not_initialised: no node key yet (readmit node init)")},
)
async def read_node(runtime: RuntimeDep) -> NodeOut:
    """Public, without authentication: what an operator of another node registers as its peer."""
    node = runtime.node
    if node is None:
        raise NodeNotInitialised("this node has no identity yet: run `readmit node init`")
    return NodeOut(country=node.country, name=node.name, public_key=node.public_key_b64, api_version=API_VERSION)
