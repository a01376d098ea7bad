from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.countries import Country
from app.core.dates import Day
from app.core.modalities import Modality


class AgreementIn(BaseModel):
    receiving_country: Country = Field(description="the state whose agencies search")
    origin_country: Country = Field(
        description="the state whose galleries are searched; another country than receiving_country "
        "(the same one is refused with invalid_agreement, 422)"
    )
    modalities: list[Modality] = Field(min_length=1, examples=[["face", "finger"]])
    valid_from: Day
    valid_to: Day | None = Field(
        None, description="last day in force, none for open-ended; before valid_from is refused with invalid_agreement"
    )


class AgreementOut(AgreementIn):
    id: int
    created_at: datetime
