from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from app.core.countries import Country
from app.core.text import text
from app.principals.models import Role

NAMED: JsonDict = {"type": "string"}  # given, not null: the property's own schema says which strings


class PrincipalIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Registry, consular and border_police principals are scoped by a country; border_police "
            "also by an agency.",
            # if/then rather than a union, so that a generated client keeps one PrincipalIn class
            "if": {"required": ["role"], "properties": {"role": {"enum": [Role.REGISTRY.value, Role.CONSULAR.value]}}},
            "then": {"required": ["country"], "properties": {"country": NAMED}},
            "else": {
                "if": {"required": ["role"], "properties": {"role": {"const": Role.BORDER_POLICE.value}}},
                "then": {"required": ["country", "agency"], "properties": {"country": NAMED, "agency": NAMED}},
            },
        }
    )

    name: Annotated[str, text(200, min_length=1)]
    role: Role
    country: Country | None = Field(
        None,
        description="required for registry, consular and border_police (else missing_country, 422); "
        "an auditor's country limits the audit events it reads to those touching that country (none: all); "
        "an admin's scopes nothing",
    )
    agency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}-[A-Z0-9_-]{1,60}$")] | None = Field(
        None,
        description="required for border_police (else missing_agency, 422), e.g. FRA-DCPAF; ignored for other roles",
        examples=["FRA-DCPAF"],
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
