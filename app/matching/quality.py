"""Probe quality: samples below their modality's minimum are not searched; and the enrolment
qualities a candidate is shown with.

A quality score 0-100 per sample follows ISO/IEC 29794 (NFIQ 2 for fingerprints, OFIQ for
faces). A sample below the configured minimum of its modality (``READMIT_MIN_PROBE_QUALITY``) is
dropped from its probe, and the answer says so; a probe none of whose samples is left is refused
(``low_quality``), as MOSIP ABIS refuses a failed quality check and the Eurodac recast requires a
quality check on receipt. A sample sent without a quality, or of a modality without a minimum,
is searched: no score is not a low score.

A candidate keeps the qualities of the enrolled samples it matched (app/galleries/qualities.py),
as they were when it was found, so that a consul weighs a strong score against a poor enrolment
as against a poor probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.matching.exceptions import InvalidQuality


@dataclass(frozen=True)
class Screening:
    """What the screen of one modality's probe found: the positions of the samples kept, the
    kept samples' qualities and the samples dropped (positions as sent)."""

    kept: list[int]
    qualities: list[dict[str, object]] = field(default_factory=list)
    dropped: list[dict[str, object]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.kept


def screen(modality: str, qualities: Sequence[float | None], count: int, minimum: float | None) -> Screening:
    """Screen ``count`` samples of ``modality`` whose qualities are ``qualities`` (one each)."""
    if len(qualities) != count:
        raise InvalidQuality(f"{len(qualities)} qualities given for {count} {modality} probe samples: give one each")
    kept, known, dropped = [], [], []
    for index, quality in enumerate(qualities):
        if quality is not None and minimum is not None and quality < minimum:
            dropped.append({"modality": modality, "index": index, "quality": quality, "minimum": minimum})
            continue
        kept.append(index)
        if quality is not None:
            known.append({"modality": modality, "index": index, "quality": quality})
    return Screening(kept, known, dropped)


def enrolment_qualities(records: Iterable[tuple[str, Sequence[float | None] | None]]) -> list[dict[str, Any]] | None:
    """The known qualities of the records a candidate matched, each given as (modality, its
    templates' qualities): ``{modality, index, quality}``, ``index`` the template's position in
    its record; None when none is known."""
    known = [
        {"modality": modality, "index": index, "quality": quality}
        for modality, qualities in records
        for index, quality in enumerate(qualities or [])
        if quality is not None
    ]
    return known or None
