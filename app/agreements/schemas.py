from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Modality = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]


class AgreementIn(BaseModel):
    receiving_country: Country
    origin_country: Country
    modalities: list[Modality] = Field(min_length=1, examples=[["face", "finger"]])
    valid_from: date
    valid_to: date | None = None


class AgreementOut(AgreementIn):
    id: int
    created_at: datetime
