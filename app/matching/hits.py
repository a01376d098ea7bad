"""A candidate as a batch finds it, before it is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matcher import Band


@dataclass(frozen=True)
class Hit:
    gallery_id: int
    record_id: int
    score: float
    decision_score: float
    band: Band
    match_threshold: float
    possible_threshold: float
    modalities: list[dict[str, Any]] | None = None
    """A person of a multi-modal search: what each modality said (app/matching/fused.py)."""

    @property
    def matched_records(self) -> list[int]:
        """The records the candidate rests on: its record, or each modality's of a person."""
        return [m["record_id"] for m in self.modalities] if self.modalities else [self.record_id]
