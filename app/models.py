"""Every model of every domain, imported in one place above the domains so that the metadata is
complete (Alembic, tests)."""

from app.agreements.models import Agreement
from app.audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditEventCountry,
    AuditHead,
    AuditPending,
    AuditTreeHead,
    AuditTreeNode,
)
from app.cases.models import Case, CaseLink, CaseLinkCheck
from app.db.base import Base
from app.deduplication.models import DeduplicationJob, DeduplicationPair
from app.encryption.models import DataKey
from app.federation.models import InboundSearch, OutboundSearch, Peer, RemoteCandidate, SeenNonce
from app.galleries.models import Gallery, GalleryChange, Record, RecordVersion, Template
from app.matching.models import Candidate, Search
from app.principals.models import Principal, WebSession
from app.review.models import ReviewPolicy

__all__ = [
    "Agreement",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditEventCountry",
    "AuditHead",
    "AuditPending",
    "AuditTreeHead",
    "AuditTreeNode",
    "Base",
    "Candidate",
    "Case",
    "CaseLink",
    "CaseLinkCheck",
    "DataKey",
    "DeduplicationJob",
    "DeduplicationPair",
    "Gallery",
    "GalleryChange",
    "InboundSearch",
    "OutboundSearch",
    "Peer",
    "Principal",
    "Record",
    "RecordVersion",
    "RemoteCandidate",
    "ReviewPolicy",
    "Search",
    "SeenNonce",
    "Template",
    "WebSession",
]
