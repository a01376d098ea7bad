"""Request and response bodies of galleries and enrolment."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.countries import Country
from app.core.modalities import Modality
from app.core.numbers import Integer, Number
from app.core.text import Attributes, ReferenceId, text
from matcher import Metric

Sample = list[Number]
"""One template or probe: JSON numbers only (app/core/numbers.py)."""

QUALITIES_OUT = (
    "the quality (0-100, ISO/IEC 29794: NFIQ 2 for fingers, OFIQ for faces) of each template, in sample order, null "
    "where unknown; null when no template came with one"
)


class TemplateFormatIn(BaseModel):
    model: Annotated[str, text(128, min_length=1)]
    dimension: Integer = Field(ge=1, le=4096)
    metric: Metric = Metric.COSINE


class TemplateFormatOut(BaseModel):
    model: str
    dimension: int
    metric: Metric


class GalleryIn(BaseModel):
    country: Country
    modality: Modality = Field(examples=["face", "finger"])
    template_format: TemplateFormatIn


class GalleryOut(BaseModel):
    id: int
    country: str
    modality: str
    template_format: TemplateFormatOut
    record_count: int
    template_count: int
    index_kind: str | None = Field(description="exact or pq_fastscan; null while the index loads")
    index_ready: bool
    change_seq: int
    created_at: datetime


class RecordIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "reference_id": "NIC-000123",
                "templates": [[0.01, -0.02, 0.03]],
                "qualities": [72],
                "attributes": {"family_name": "Doe", "given_names": "Jane", "date_of_birth": "1990-01-31"},
            }
        }
    )

    reference_id: ReferenceId
    templates: list[Sample] | None = Field(
        None,
        description="samples as JSON floats, each of the gallery's dimension, finite and not all zero; exactly one "
        "of templates and templates_b64. A record breaking these rules is listed in the answer's errors "
        "(invalid_template, too_many_templates) while the batch's other records are stored",
    )
    templates_b64: list[str] | None = Field(
        None,
        description="samples as base64 of little-endian float32 (faster for bulk), 4 bytes a dimension; a record "
        "that cannot be decoded is listed in errors (invalid_template)",
    )
    qualities: list[Number | None] | None = Field(
        None,
        description="one quality score per template (of templates or templates_b64, in order), 0-100 as ISO/IEC "
        "29794 has it (NFIQ 2 for fingers, OFIQ for faces), null where unknown; shown to consuls beside the probe's. A "
        "record with not one per template or one outside 0-100 is listed in errors (invalid_quality); one whose every "
        "template is below READMIT_MIN_ENROLMENT_QUALITY for the gallery's modality is listed in errors (low_quality, "
        "its message giving the qualities and the minimum). Other qualities alone make a new version of the record",
    )
    attributes: Attributes = Field(default_factory=dict, description="minimal identity attributes")


class RecordBatchIn(BaseModel):
    records: list[RecordIn] = Field(
        min_length=1, description="more than READMIT_MAX_BATCH_RECORDS is refused whole with batch_too_large (400)"
    )


class RecordError(BaseModel):
    index: int = Field(description="position of the record in the batch")
    reference_id: str
    code: str
    message: str


class RecordBatchOut(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    errors: list[RecordError]


class RecordOut(BaseModel):
    gallery_id: int
    reference_id: str
    attributes: dict[str, str]
    template_count: int = Field(description="templates (samples) enrolled for the record")
    sample_count: int = Field(deprecated=True, description="the same as template_count, its former name")
    qualities: list[float | None] | None = Field(description=QUALITIES_OUT)
    enrolled_at: datetime
    updated_at: datetime = Field(description="when the current version was written")
    version: int = Field(
        description="the record's current version: 1 at enrolment, one more at each update (its earlier versions: "
        "GET .../history)"
    )


class Author(BaseModel):
    id: int = Field(description="principal id")
    name: str


class RecordVersionOut(BaseModel):
    version: int
    change: Literal["enrolled", "updated", "erased"] = Field(
        description="what made this version: enrolled (also again after an erasure), updated (re-enrolled with other "
        "templates or attributes), erased (the record was deleted: a tombstone)"
    )
    attributes: dict[str, str] | None = Field(
        description="the version's identity attributes; null on every version of an erased record (erasure takes "
        "them out of the service, the history keeps only digests and who changed what when)"
    )
    template_digest: str | None = Field(
        description="SHA-256 (hex) of the version's templates as stored in clear: normalised little-endian float32, "
        "samples in order, concatenated; equal digests, same templates. Null on an erasure. The templates themselves "
        "are never kept in the history"
    )
    template_count: int
    qualities: list[float | None] | None = Field(
        description=QUALITIES_OUT + "; null on every version of an erased record"
    )
    changed_at: datetime
    changed_by: Author = Field(description="the principal who wrote this version")


class RecordHistoryOut(BaseModel):
    gallery_id: int
    reference_id: str
    version: int | None = Field(description="the current version; null once the record is erased")
    versions: list[RecordVersionOut] = Field(description="newest first, the current version included")
