from __future__ import annotations

from datetime import date, datetime

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
        return (
            modality in self.modalities and self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)
        )
