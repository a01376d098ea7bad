from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.api.deps import SessionsDep, require
from app.core.ids import RowId
from app.matching import service
from app.matching.schemas import SearchOut
from app.matching.views import SearchView
from app.principals.models import Principal, Role

router = APIRouter(prefix="/v1/searches", tags=["searches"])
BorderPolice = Annotated[Principal, Depends(require(Role.BORDER_POLICE))]


@router.get("/{search_id}", response_model=SearchOut, summary="Poll a search and read its candidates")
def read_search(search_id: RowId, actor: BorderPolice, sessions: SessionsDep) -> SearchView:
    """Identity attributes of a candidate appear only once a consular officer has confirmed it."""
    return service.read_search(sessions, actor, search_id)
