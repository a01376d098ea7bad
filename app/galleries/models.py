from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, UTCDateTime, utcnow

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids on PostgreSQL; SQLite's INTEGER PRIMARY KEY is already 64-bit and autoincrements."""


class Gallery(Base):
    """One country's records of one modality and template format. ``change_seq`` counts every
    committed change to its records: an index snapshot taken at the same number is current."""

    __tablename__ = "galleries"
    __table_args__ = (UniqueConstraint("country", "modality", "model", name="country_modality_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    country: Mapped[str] = mapped_column(String(3), index=True)
    modality: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    dimension: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16))
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GalleryChange(Base):
    """One committed change transaction of a gallery, written in that transaction with its
    ``change_seq`` step: the change feed other processes follow to keep their indexes current
    (app/indexes/follower.py). The ids are little-endian int64 arrays, one row per transaction
    whatever its size, so that a bulk load does not pay a row per record; the templates are not
    here (a follower reads the records' current ones, sealed, from ``templates``)."""

    __tablename__ = "gallery_changes"

    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"), primary_key=True)
    change_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    upserted: Mapped[bytes] = mapped_column(LargeBinary)
    """records new or replaced: each now has exactly its stored templates"""
    removed: Mapped[bytes] = mapped_column(LargeBinary)
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """the writer's clock at the end of the transaction (another host's clock for a follower)"""


class Record(Base):
    """A person enrolled in a gallery: a reference id unique in the gallery, minimal identity
    attributes, and one or more templates. ``id`` is the record's id inside the matcher. The row
    is the record's current version; the versions it replaced are in ``record_versions``."""

    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("gallery_id", "reference_id", name="gallery_reference"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"))  # indexed first in gallery_reference
    reference_id: Mapped[str] = mapped_column(String(128))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    template_count: Mapped[int] = mapped_column(Integer)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enrolled_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    """When the current version was written (its enrolment, or the update that made it)."""
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    """Who wrote the current version; null on records not updated since revision 0016, whose
    current version is their enrolment (``enrolled_by``)."""
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    """1 at enrolment, one more at each update; a record enrolled again after an erasure goes on
    from its erasure's number, so that a reference id's versions never repeat."""
    qualities: Mapped[list[float | None] | None] = mapped_column(JSON(none_as_null=True))
    """The quality (0-100, ISO/IEC 29794) of each template, in sample order, None where unknown;
    None when no sample came with one. Metadata, not biometric: kept in clear."""

    templates: Mapped[list[Template]] = relationship(
        back_populates="record", cascade="all, delete-orphan", order_by="Template.sample", lazy="selectin"
    )

    def replace(
        self,
        vectors: list[bytes],
        qualities: list[float | None] | None,
        attributes: dict[str, Any],
        now: datetime,
        by: int,
    ) -> None:
        """Make ``vectors`` (as stored: see app/galleries/stored.py) the record's samples, of
        ``qualities``, and ``attributes`` its attributes: its next version, written by ``by``."""
        self.attributes, self.template_count, self.updated_at = attributes, len(vectors), now
        self.qualities = qualities
        self.updated_by, self.version = by, self.version + 1
        self.templates = [Template(gallery_id=self.gallery_id, sample=i, vector=v) for i, v in enumerate(vectors)]


class Template(Base):
    """One sample of a record: little-endian float32 bytes, normalised for cosine galleries,
    sealed under the gallery's data key (app/galleries/stored.py)."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(BigId, ForeignKey("records.id", ondelete="CASCADE"), index=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"), index=True)
    sample: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    record: Mapped[Record] = relationship(back_populates="templates")


class RecordVersion(Base):
    """A version of a record that is no longer current, or the erasure that ended a record.

    Kept by reference id, not by record, so that a record's history outlives its deletion. Holds
    the attributes of the version and a SHA-256 digest of its templates (app/galleries/history.py),
    never the templates. An erasure keeps no attributes: the tombstone and the versions before it
    keep only their digests and who changed what when."""

    __tablename__ = "record_versions"

    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id"), primary_key=True)
    reference_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    change: Mapped[str] = mapped_column(String(16))
    """What made this version: enrolled, updated, or erased (a tombstone)."""
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """None once the record is erased."""
    template_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    """None on a tombstone, which has no templates."""
    template_count: Mapped[int] = mapped_column(Integer)
    qualities: Mapped[list[float | None] | None] = mapped_column(JSON(none_as_null=True))
    """The version's template qualities (see ``Record.qualities``); None once the record is erased."""
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    changed_by: Mapped[int] = mapped_column(ForeignKey("principals.id"))
