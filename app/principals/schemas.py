from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.principals.models import Role


class PrincipalIn(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    role: Role
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="ISO 3166-1 alpha-3; required for registry, consular and border_police"
    )
    agency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}-[A-Z0-9_-]{1,60}$")] | None = Field(
        None, description="border_police only, e.g. FRA-DCPAF", examples=["FRA-DCPAF"]
    )


class PrincipalOut(BaseModel):
    id: int
    name: str
    role: Role
    country: str | None
    agency: str | None
    created_at: datetime
    revoked_at: datetime | None


class PrincipalCreated(PrincipalOut):
    api_key: str = Field(description="shown once: store it now, it cannot be read again")
