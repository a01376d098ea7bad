"""Enrolment sample quality: the quality score 0-100 of each template of a record (ISO/IEC
29794: NFIQ 2 for fingerprints, OFIQ for faces), as the registry measured it at capture.

Kept with the record so that a consul can weigh a match against a poor enrolment, and checked
the way probe quality is (app/matching/quality.py): one per template, null where unknown (no
score is not a low score), and where a minimum is configured for the gallery's modality
(``READMIT_MIN_ENROLMENT_QUALITY``) a record whose every template is below it is refused. A
record with some templates below the minimum keeps them all: dropping samples would store a
record other than the one the registry sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from app.galleries.exceptions import InvalidQuality, LowQuality

SampleQualities = list[float | None]
"""One quality per template of a record, in sample order, None where unknown."""


def checked(qualities: object, count: int, minimum: float | None) -> SampleQualities | None:
    """``qualities`` as sent for a record of ``count`` templates, as stored: None when none is
    known. Raises InvalidQuality (not a list of one number or null per template, or outside
    0-100) or LowQuality (every template below ``minimum``)."""
    if qualities is None:
        return None
    if not isinstance(qualities, list | tuple) or len(qualities) != count:
        given = len(qualities) if isinstance(qualities, list | tuple) else "no list of"
        raise InvalidQuality(f"{given} qualities given for {count} templates: give one each, null where unknown")
    values: SampleQualities = []
    for sample, quality in enumerate(qualities, start=1):
        if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int | float)):
            raise InvalidQuality(f"quality of template {sample} is not a number")
        if quality is not None and not 0 <= quality <= 100:  # NaN fails this too
            raise InvalidQuality(f"quality of template {sample} is {quality}: qualities are 0-100 (ISO/IEC 29794)")
        values.append(None if quality is None else float(quality))
    if minimum is not None and values and all(q is not None and q < minimum for q in values):
        listed = ", ".join(f"{q:g}" for q in values if q is not None)
        raise LowQuality(
            f"every template is below the minimum enrolment quality {minimum:g} of its modality (qualities {listed}): "
            "capture better samples"
        )
    return values if any(q is not None for q in values) else None


def from_array(qualities: np.ndarray) -> list[object]:
    """Rows of an (n, samples) array read from a file, NaN where unknown, as lists of qualities
    for :func:`checked`."""
    return [[None if math.isnan(q) else q for q in row] for row in qualities.tolist()]


def all_checked(
    sent: Sequence[object], counts: Sequence[int], minimum: float | None
) -> tuple[list[SampleQualities | None], dict[int, InvalidQuality | LowQuality]]:
    """Each record's qualities checked against its template count; the refused records' errors
    by their position in ``sent``."""
    stored: list[SampleQualities | None] = []
    errors: dict[int, InvalidQuality | LowQuality] = {}
    for record, (qualities, count) in enumerate(zip(sent, counts, strict=True)):
        try:
            stored.append(checked(qualities, count, minimum))
        except (InvalidQuality, LowQuality) as error:
            errors[record] = error
            stored.append(None)
    return stored, errors
