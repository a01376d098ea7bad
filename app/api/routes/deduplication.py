from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import AdminOrRegistry, RuntimeDep
from app.core.ids import RowId
from app.deduplication import service
from app.deduplication.schemas import DeduplicationAccepted, DeduplicationIn, DeduplicationOut

router = APIRouter(tags=["deduplication"])


@router.post(
    "/v1/galleries/{gallery_id}/deduplication",
    status_code=202,
    response_model=DeduplicationAccepted,
    summary="Start a deduplication of a gallery",
)
def start_deduplication(
    gallery_id: RowId, body: DeduplicationIn, actor: AdminOrRegistry, runtime: RuntimeDep
) -> dict[str, Any]:
    """Finds the pairs of records of the gallery that score above the threshold at ``target_fmr``,
    calibrated on the far tail of the gallery's own non-mated scores, and their clusters. The job
    runs in the background, after identifications: poll ``GET /v1/deduplication/{id}``."""
    job = service.start_deduplication(runtime.sessions, actor, gallery_id, body.target_fmr, body.max_pairs)
    runtime.deduplication.wake()
    return {"id": job.id, "status": job.status}


@router.get("/v1/deduplication/{job_id}", response_model=DeduplicationOut, summary="Read a deduplication job")
def read_deduplication(job_id: RowId, actor: AdminOrRegistry, runtime: RuntimeDep) -> dict[str, Any]:
    job = service.read_deduplication(runtime.sessions, runtime.read_sessions, actor, job_id)
    return {
        **job.__dict__,
        "progress": {"blocks_done": job.blocks_done, "blocks_total": job.blocks_total},
        "pairs": [pair.__dict__ for pair in job.pairs],
    }
