from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class DataKey(Base):
    """A data key, wrapped by the master key named ``master_key_id``. ``scope`` says what it
    seals: ``gallery/<id>`` (a gallery's templates and snapshots) or ``probes`` (every search's
    probes). A gallery with no data key holds clear data, written while encryption was off or
    before it existed; the next start with encryption on seals it."""

    __tablename__ = "data_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    wrapped_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
