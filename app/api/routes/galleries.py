from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import Admin, AdminOrRegistry, Registry, RegistryOrConsular, RuntimeDep, SessionsDep
from app.api.openapi import refusal
from app.core.ids import RowId
from app.core.text import ReferenceId
from app.galleries import enrolment, history, service
from app.galleries.schemas import (
    GalleryIn,
    GalleryOut,
    RecordBatchIn,
    RecordBatchOut,
    RecordHistoryOut,
    RecordOut,
)
from app.galleries.templates import EncodedTemplates
from app.principals.models import Role
from app.review import service as review
from matcher import TemplateFormat

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])


@router.post(
    "",
    status_code=201,
    response_model=GalleryOut,
    summary="Create a gallery",
    responses={
        409: refusal("duplicate_gallery: the country already has a gallery of this modality and model"),
        503: refusal(
            "shards_unplaceable (Ray backend): the cluster cannot give the gallery's shards their CPUs; details has "
            "shards, cpus_per_shard, cpus_needed, cpus_total, cpus_available, and no gallery is created. "
            "database_unavailable: retry later"
        ),
    },
)
def create_gallery(body: GalleryIn, actor: Admin, runtime: RuntimeDep) -> service.GalleryView:
    """A gallery fixes its template format: templates of any other model, dimension or metric
    are refused with ``invalid_template``."""
    fmt = TemplateFormat(body.template_format.model, body.template_format.dimension, body.template_format.metric)
    return service.create_gallery(runtime.sessions, runtime.registry, actor, body.country, body.modality, fmt)


@router.get("", response_model=list[GalleryOut], summary="List the galleries the caller may see")
def list_galleries(actor: AdminOrRegistry, runtime: RuntimeDep) -> list[service.GalleryView]:
    return service.list_galleries(runtime.read_sessions, runtime.registry, actor)


@router.get("/{gallery_id}", response_model=GalleryOut, summary="Read a gallery with its counts")
def read_gallery(gallery_id: RowId, actor: AdminOrRegistry, runtime: RuntimeDep) -> service.GalleryView:
    return service.read_gallery(runtime.read_sessions, runtime.registry, actor, gallery_id)


@router.post(
    "/{gallery_id}/records:batch",
    response_model=RecordBatchOut,
    summary="Enrol or update records in bulk",
    responses={400: refusal("batch_too_large: more records than READMIT_MAX_BATCH_RECORDS; http_error: not JSON")},
)
def enrol_records(gallery_id: RowId, body: RecordBatchIn, actor: Registry, runtime: RuntimeDep) -> dict[str, object]:
    """Idempotent by ``reference_id``: an identical record is left alone, a changed one has its
    templates and attributes replaced. Records with errors are listed in ``errors`` (with their
    position and a code); the others are stored. Templates are checked against the gallery's
    format (dimension, finite values, non-zero norm) and normalised for cosine galleries; their
    qualities, if sent, are one per template within 0-100 and kept with the record."""
    submissions = [
        enrolment.RecordSubmission(
            position,
            item.reference_id,
            EncodedTemplates(item.templates, item.templates_b64),
            item.attributes,
            item.qualities,
        )
        for position, item in enumerate(body.records)
    ]
    limits = enrolment.EnrolmentLimits(
        runtime.settings.max_batch_records,
        runtime.settings.max_templates_per_record,
        runtime.settings.min_enrolment_quality,
    )
    outcome = enrolment.enrol(runtime.sessions, runtime.registry, actor, gallery_id, submissions, limits)
    for change, count in (
        ("inserted", outcome.inserted),
        ("updated", outcome.updated),
        ("unchanged", outcome.unchanged),
        ("rejected", len(outcome.rejected)),
    ):
        runtime.metrics.enrolled.labels(str(gallery_id), change).inc(count)
    return {
        "inserted": outcome.inserted,
        "updated": outcome.updated,
        "unchanged": outcome.unchanged,
        "errors": [
            {"index": r.position, "reference_id": r.reference_id, "code": r.code, "message": r.message}
            for r in outcome.rejected
        ],
    }


@router.get(
    "/{gallery_id}/records/{reference_id}", response_model=RecordOut, summary="Read a record (never its templates)"
)
def read_record(
    gallery_id: RowId, reference_id: ReferenceId, actor: RegistryOrConsular, sessions: SessionsDep
) -> dict[str, object]:
    """Registry: its own country's records. Consular: its own country's records that a candidate
    points to. The read is audited."""
    read = review.read_candidate_record if actor.role == Role.CONSULAR.value else service.read_record
    record = read(sessions, actor, gallery_id, reference_id)
    return {**record.__dict__, "sample_count": record.template_count}


@router.get(
    "/{gallery_id}/records/{reference_id}/history",
    response_model=RecordHistoryOut,
    summary="Read a record's versions (never its templates)",
    responses={404: refusal("not_found: no such record ever enrolled in a gallery the caller may read")},
)
def read_record_history(
    gallery_id: RowId, reference_id: ReferenceId, actor: AdminOrRegistry, sessions: SessionsDep
) -> history.HistoryView:
    """Every version of the record, newest first: its attributes, a digest of its templates,
    when and by whom it was written, and what made it (enrolled, updated, erased). Registry: its
    own country's records; admin: any. An erased record keeps its versions without attributes,
    after a tombstone. The read is audited (``record.read_history``)."""
    return history.read_history(sessions, actor, gallery_id, reference_id)


@router.delete("/{gallery_id}/records/{reference_id}", status_code=204, summary="Delete a record")
def delete_record(gallery_id: RowId, reference_id: ReferenceId, actor: Registry, runtime: RuntimeDep) -> Response:
    """The record is gone from matching when this call returns."""
    service.delete_record(runtime.sessions, runtime.registry, actor, gallery_id, reference_id)
    return Response(status_code=204)
