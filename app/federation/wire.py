"""The messages nodes exchange, as JSON bodies (signed with app/federation/signatures.py).

What crosses: probes (base64 float32), their format and modality, the FPIR and list length, the
case's deadline and legal basis and a pseudonymous case reference; back: candidate ids,
reference ids, ranks, scores, bands and review states, and identity attributes of a confirmed
candidate only. Never the receiving state's case file (its reference, agency, dates of
detention, presumed countries), never a record's templates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.cases.models import LegalBasis
from app.core.modalities import Modality
from app.core.text import WITHOUT_NUL, Attributes, ReferenceId
from matcher import Metric

SEARCHES_PATH = "/v1/federation/searches"
NOTIFICATIONS_PATH = "/v1/federation/notifications"


class FederatedSearchRequest(BaseModel):
    request_id: str = Field(
        min_length=8, max_length=64, pattern=WITHOUT_NUL, description="the requester's id of it: a resend is the same"
    )
    requesting_country: str = Field(min_length=3, max_length=3)
    case_reference: str = Field(
        min_length=8, max_length=64, pattern=WITHOUT_NUL, description="pseudonymous: an HMAC of the case id"
    )
    deadline: datetime
    legal_basis: LegalBasis
    modality: Modality
    model: str = Field(min_length=1, max_length=128, pattern=WITHOUT_NUL)
    dimension: int = Field(ge=1, le=4096)
    metric: Metric
    probes_b64: list[str] = Field(min_length=1)
    target_fpir: float
    max_candidates: int = Field(ge=1, le=200)
    wait_ms: int = Field(0, ge=0, le=30_000)


class FederatedCandidate(BaseModel):
    id: int = Field(description="the origin node's candidate id")
    reference_id: ReferenceId
    rank: int
    score: float
    band: str
    review_state: str
    attributes: Attributes | None = Field(None, description="only once its consuls confirmed it")


class FederatedSearchState(BaseModel):
    reference: int = Field(description="the origin node's id of the search it was asked for")
    request_id: str
    status: str
    error: str | None = None
    case_status: str
    candidates: list[FederatedCandidate]


class Acknowledged(BaseModel):
    """The requesting node's answer to a notification it applied."""

    received: bool
