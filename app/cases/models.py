from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class CaseStatus(enum.StrEnum):
    OPEN = "open"
    IDENTIFIED = "identified"
    UNIDENTIFIED = "unidentified"
    EXPIRED = "expired"
    CLOSED = "closed"


class LegalBasis(enum.StrEnum):
    """Why the case's data may be shared with the presumed countries of origin."""

    READMISSION_AGREEMENT = "readmission_agreement"
    CONSENT = "consent"
    COURT_ORDER = "court_order"
    LEGAL_OBLIGATION = "legal_obligation"


class Case(Base):
    """A detained person whose identity must be established before ``deadline``
    (``detained_at`` + ``detention_limit_days``)."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("agency", "external_ref", name="agency_external_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agency: Mapped[str] = mapped_column(String(64), index=True)
    agency_country: Mapped[str] = mapped_column(String(3))
    external_ref: Mapped[str] = mapped_column(String(128))
    detained_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detention_limit_days: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    presumed_countries: Mapped[list[str]] = mapped_column(JSON)
    legal_basis: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.OPEN.value, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CaseLink(Base):
    """Another case whose stored probes match this case's: probably the same person, held again
    under another identity (app/cases/links.py). One row for each direction."""

    __tablename__ = "case_links"
    __table_args__ = (UniqueConstraint("case_id", "linked_case_id", name="case_linked_case"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))  # indexed first in case_linked_case
    linked_case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))
    """The identification whose probes found the link."""
    score: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16))
    found_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CaseLinkCheck(Base):
    """A finished identification whose probes were compared with the other cases' (linked or
    not): the linker's progress, so that each is compared once, after its search, whatever
    restarts in between."""

    __tablename__ = "case_link_checks"

    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
