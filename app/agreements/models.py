from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from sqlalchemy import JSON, Date, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class Agreement(Base):
    """A data-sharing agreement: the receiving state may search the origin country's galleries
    of the listed modalities between ``valid_from`` and ``valid_to`` (inclusive, open-ended if
    None)."""

    __tablename__ = "agreements"

    id: Mapped[int] = mapped_column(primary_key=True)
    receiving_country: Mapped[str] = mapped_column(String(3), index=True)
    origin_country: Mapped[str] = mapped_column(String(3), index=True)
    modalities: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))

    def in_force(self, modality: str, day: date) -> bool:
        return in_force(self, modality, day)


class Terms(Protocol):
    """What decides whether an agreement is in force: an Agreement, or a row of its columns."""

    @property
    def modalities(self) -> list[str]: ...
    @property
    def valid_from(self) -> date: ...
    @property
    def valid_to(self) -> date | None: ...


def in_force(terms: Terms, modality: str, day: date) -> bool:
    return (
        modality in terms.modalities and terms.valid_from <= day and (terms.valid_to is None or day <= terms.valid_to)
    )
