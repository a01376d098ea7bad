"""Probe quality: samples below their modality's minimum are not searched.

A quality score 0-100 per sample follows ISO/IEC 29794 (NFIQ 2 for fingerprints, OFIQ for
faces). A sample below the configured minimum of its modality (``READMIT_MIN_PROBE_QUALITY``) is
dropped from its probe, and the answer says so; a probe none of whose samples is left is refused
(``low_quality``), as MOSIP ABIS refuses a failed quality check and the Eurodac recast requires a
quality check on receipt. A sample sent without a quality, or of a modality without a minimum,
is searched: no score is not a low score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
