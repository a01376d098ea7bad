from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.countries import Country
from app.core.text import WITHOUT_NUL


class NodeOut(BaseModel):
    country: str = Field(description="the country this node answers for")
    name: str
    public_key: str = Field(description="base64 of the node's raw Ed25519 public key: what its peers register")
    api_version: str


class PeerIn(BaseModel):
    country: Country = Field(description="the only country this peer is trusted for")
    url: str = Field(max_length=500, pattern=WITHOUT_NUL, description="the peer's base URL (HTTPS in production)")
    public_key: str = Field(
        max_length=64, pattern=WITHOUT_NUL, description="the peer's public_key, as its GET /v1/node shows it"
    )


class PeerOut(BaseModel):
    id: int
    country: str
    url: str
    public_key: str
    key_id: str = Field(description="what the peer's signatures name as keyid")
    created_at: datetime


class RemoteCandidateOut(BaseModel):
    id: int = Field(description="the origin node's candidate id")
    reference_id: str
    rank: int
    score: float
    band: str
    review_state: str = Field(description="as the origin node's consuls left it")
    attributes: dict[str, str] | None = Field(None, description="identity attributes, once confirmed")


class RemoteSearchOut(BaseModel):
    country: str
    status: str = Field(
        description="sending (not yet accepted by the peer), queued, running, done, failed, expired (the peer's "
        "search), refused (the peer said no: error says why) or unavailable (never accepted)"
    )
    error: str | None = Field(None, description="peer_unavailable while the peer cannot be reached; no_agreement")
    retry: bool = Field(description="resent until the deadline while the peer is unavailable")
    candidates: list[RemoteCandidateOut]
