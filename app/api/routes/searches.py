from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.api.deps import SessionDep, require
from app.core.ids import RowId
from app.matching import service
from app.matching.schemas import SearchOut
from app.principals.models import Principal, Role

router = APIRouter(prefix="/v1/searches", tags=["searches"])
BorderPolice = Annotated[Principal, Depends(require(Role.BORDER_POLICE))]


@router.get("/{search_id}", response_model=SearchOut, summary="Poll a search and read its candidates")
def read(search_id: RowId, actor: BorderPolice, session: SessionDep) -> dict[str, object]:
    """Identity attributes of a candidate appear only once a consular officer has confirmed it."""
    with session.begin():
        return service.read_search(session, actor, search_id)
