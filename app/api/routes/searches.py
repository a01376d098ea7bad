from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import BorderPolice, SessionsDep
from app.core.ids import RowId
from app.matching import service
from app.matching.schemas import SearchOut
from app.matching.views import SearchView

router = APIRouter(prefix="/v1/searches", tags=["searches"])


@router.get("/{search_id}", response_model=SearchOut, summary="Poll a search and read its candidates")
def read_search(search_id: RowId, actor: BorderPolice, sessions: SessionsDep) -> SearchView:
    """Identity attributes of a candidate appear only once a consular officer has confirmed it."""
    return service.read_search(sessions, actor, search_id)
