from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.api.deps import RuntimeDep, SessionDep, require
from app.api.openapi import refusal
from app.core.ids import RowId
from app.galleries import service
from app.galleries.models import Gallery, Record
from app.galleries.schemas import GalleryIn, GalleryOut, RecordBatchIn, RecordBatchOut, RecordOut
from app.principals.models import Principal, Role
from app.runtime import Runtime

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
AdminOrRegistry = Annotated[Principal, Depends(require(Role.ADMIN, Role.REGISTRY))]
Registry = Annotated[Principal, Depends(require(Role.REGISTRY))]
RegistryOrConsular = Annotated[Principal, Depends(require(Role.REGISTRY, Role.CONSULAR))]


def _out(runtime: Runtime, gallery: Gallery, records: int, templates: int) -> dict[str, object]:
    loaded = runtime.registry.is_loaded(gallery.id)
    return {
        "id": gallery.id,
        "country": gallery.country,
        "modality": gallery.modality,
        "template_format": {"model": gallery.model, "dimension": gallery.dimension, "metric": gallery.metric},
        "record_count": records,
        "template_count": templates,
        "index_kind": runtime.registry.get(gallery.id).kind.value if loaded else None,
        "index_ready": loaded,
        "change_seq": gallery.change_seq,
        "created_at": gallery.created_at,
    }


@router.post(
    "",
    status_code=201,
    response_model=GalleryOut,
    summary="Create a gallery",
    responses={409: refusal("duplicate_gallery: the country already has a gallery of this modality and model")},
)
def create(body: GalleryIn, actor: Admin, session: SessionDep, runtime: RuntimeDep) -> dict[str, object]:
    """A gallery fixes its template format: templates of any other model, dimension or metric
    are refused with ``invalid_template``."""
    fmt = body.template_format
    with session.begin():
        gallery = service.create_gallery(
            session, actor, body.country, body.modality, fmt.model, fmt.dimension, fmt.metric
        )
    runtime.registry.create_empty(gallery.id, service.template_format(gallery))
    return _out(runtime, gallery, 0, 0)


@router.get("", response_model=list[GalleryOut], summary="List the galleries the caller may see")
def list_all(actor: AdminOrRegistry, session: SessionDep, runtime: RuntimeDep) -> list[dict[str, object]]:
    return [
        _out(runtime, gallery, *service.gallery_counts(session, gallery.id))
        for gallery in service.list_galleries(session, actor)
    ]


@router.get("/{gallery_id}", response_model=GalleryOut, summary="Read a gallery with its counts")
def read(gallery_id: RowId, actor: AdminOrRegistry, session: SessionDep, runtime: RuntimeDep) -> dict[str, object]:
    gallery = service.visible_gallery(session, actor, gallery_id)
    return _out(runtime, gallery, *service.gallery_counts(session, gallery_id))


@router.post(
    "/{gallery_id}/records:batch",
    response_model=RecordBatchOut,
    summary="Enrol or update records in bulk",
    responses={400: refusal("batch_too_large: more records than READMIT_MAX_BATCH_RECORDS; http_error: not JSON")},
)
def enrol(gallery_id: RowId, body: RecordBatchIn, actor: Registry, runtime: RuntimeDep) -> dict[str, object]:
    """Idempotent by ``reference_id``: an identical record is left alone, a changed one has its
    templates and attributes replaced. Records with errors are listed in ``errors`` (with their
    position and a code); the others are stored. Templates are checked against the gallery's
    format (dimension, finite values, non-zero norm) and normalised for cosine galleries."""
    outcome = service.enrol_batch(runtime.sessions, runtime.registry, runtime.settings, actor, gallery_id, body.records)
    runtime.metrics.enrolled.labels(str(gallery_id), "inserted").inc(outcome.inserted)
    runtime.metrics.enrolled.labels(str(gallery_id), "updated").inc(outcome.updated)
    return outcome.__dict__


@router.get(
    "/{gallery_id}/records/{reference_id}", response_model=RecordOut, summary="Read a record (never its templates)"
)
def read_record(
    gallery_id: RowId, reference_id: str, actor: RegistryOrConsular, session: SessionDep
) -> dict[str, object]:
    """Registry: its own country's records. Consular: its own country's records that a candidate
    points to. The read is audited."""
    with session.begin():
        record: Record = service.read_record(session, actor, gallery_id, reference_id)
    return {
        "gallery_id": record.gallery_id,
        "reference_id": record.reference_id,
        "attributes": record.attributes,
        "sample_count": record.template_count,
        "enrolled_at": record.enrolled_at,
        "updated_at": record.updated_at,
    }


@router.delete("/{gallery_id}/records/{reference_id}", status_code=204, summary="Delete a record")
def delete_record(gallery_id: RowId, reference_id: str, actor: Registry, runtime: RuntimeDep) -> Response:
    """The record is gone from matching when this call returns."""
    service.delete_record(runtime.sessions, runtime.registry, actor, gallery_id, reference_id)
    return Response(status_code=204)
