from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime


class ReviewPolicy(Base):
    """How a country of origin's candidates are reviewed: with ``second_reviewer_required``, a
    confirmation needs a second consul of that country (four-eyes). A country without a row needs
    one consul."""

    __tablename__ = "review_policies"

    country: Mapped[str] = mapped_column(String(3), primary_key=True)
    second_reviewer_required: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
