"""Multi-modal identification: the probes of each modality, and candidates fused per person.

A country's records are linked across its galleries by ``reference_id`` (the registry's person
id). Each modality of a search is searched in that country's gallery of the modality; per
person, each modality's decision score becomes evidence (``-log`` of its non-mated tail
probability in its own gallery's calibration sample) and the evidence is summed; the fused
thresholds are read at the search's FPIR for the number of the country's galleries searched.
The maths are in matcher/score_fusion.py; this module links records to people and keeps, per
candidate, what each modality said.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.galleries.templates import from_bytes
from app.matching.hits import Hit
from app.matching.thresholds import POSSIBLE_FACTOR, ThresholdBook
from matcher import Thresholds
from matcher.score_fusion import fuse_people, fused_threshold


@dataclass(frozen=True)
class ModalPart:
    """One modality of a multi-modal search: its probe samples and the galleries searched."""

    modality: str
    probes: np.ndarray
    galleries: list[int]


@dataclass(frozen=True)
class GalleryRows:
    """What one gallery returned for one multi-modal search: its listed records, best first."""

    gallery_id: int
    record_ids: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray


@dataclass(frozen=True)
class SearchedGallery:
    country: str
    modality: str


def parts_of(modalities: list[dict[str, Any]], probes: bytes) -> tuple[ModalPart, ...]:
    """A stored multi-modal search's modalities, its probes split as they were joined."""
    parts, start = [], 0
    for modality in modalities:
        dimension, count = modality["template_format"]["dimension"], modality["probe_count"]
        stop = start + dimension * count * 4
        parts.append(
            ModalPart(
                modality["modality"], from_bytes([probes[start:stop]], dimension), list(modality["searched_galleries"])
            )
        )
        start = stop
    return tuple(parts)


def fused_hits(
    rows: Iterable[GalleryRows],
    records: dict[int, str],
    galleries: dict[int, SearchedGallery],
    thresholds: ThresholdBook,
    fpir: float,
) -> list[Hit]:
    """The people above the fused ``possible`` threshold, per country of the galleries searched
    (a reference id names a person within its country), best first within a country.
    ``records``: the reference id of each listed record still enrolled."""
    by_country: dict[str, list[GalleryRows]] = defaultdict(list)
    for row in rows:
        by_country[galleries[row.gallery_id].country].append(row)
    hits: list[Hit] = []
    for country_rows in by_country.values():
        hits += _fuse_country(country_rows, records, galleries, thresholds, fpir)
    return hits


def _fuse_country(
    rows: list[GalleryRows],
    records: dict[int, str],
    galleries: dict[int, SearchedGallery],
    book: ThresholdBook,
    fpir: float,
) -> list[Hit]:
    person_of: dict[str, int] = {}
    people, evidence, said = [], [], defaultdict(list)
    for row in rows:
        tail = book.nonmated_tail(row.gallery_id)
        alone = book.for_identification(row.gallery_id, fpir).thresholds
        enrolled = np.array([r in records for r in row.record_ids.tolist()], dtype=bool)
        ids, scores, decisions = row.record_ids[enrolled], row.scores[enrolled], row.decisions[enrolled]
        probabilities = tail.probability(decisions)
        persons = np.array([person_of.setdefault(records[r], len(person_of)) for r in ids.tolist()], dtype=np.int64)
        people.append(persons)
        evidence.append(-np.log(probabilities))
        for person, record_id, score, decision, probability in zip(
            persons.tolist(), ids.tolist(), scores.tolist(), decisions.tolist(), probabilities.tolist(), strict=True
        ):
            band = alone.band(decision)
            said[person].append(
                {
                    "modality": galleries[row.gallery_id].modality,
                    "gallery_id": row.gallery_id,
                    "record_id": record_id,
                    "score": score,
                    "decision_score": decision,
                    "tail_probability": probability,
                    "band_alone": band.value if band is not None else None,
                }
            )
    thresholds = Thresholds(
        match=fused_threshold(fpir, len(rows)),
        possible=fused_threshold(min(fpir * POSSIBLE_FACTOR, 0.5), len(rows)),
    )
    hits = []
    for person, fused in zip(*(part.tolist() for part in fuse_people(people, evidence)), strict=True):
        band = thresholds.band(fused)
        if band is None:
            break  # best first: nobody below is listed either
        modalities = sorted(said[person], key=lambda m: m["tail_probability"])
        hits.append(
            Hit(
                modalities[0]["gallery_id"],
                modalities[0]["record_id"],
                fused,
                fused,
                band,
                thresholds.match,
                thresholds.possible,
                modalities,
            )
        )
    return hits
