"""Record sources for bulk enrolment, read as streams so that millions of records never sit in
memory at once: ``.npy``/``.npz`` templates beside a CSV or JSON Lines file of reference ids and
attributes (row i of one is row i of the other), or JSON Lines with inline templates."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.galleries.enrolment import RecordSubmission
from app.galleries.templates import EncodedTemplates


def _load_templates(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as archive:
            if "templates" not in archive:
                raise ValueError(f"{path} has no array named 'templates'")
            return archive["templates"]
    return np.load(path, mmap_mode="r")


def _metadata_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix == ".csv":
            for row in csv.DictReader(handle):
                reference = row.pop("reference_id", None)
                yield {"reference_id": reference, "attributes": {k: v for k, v in row.items() if v not in (None, "")}}
        else:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def read_paired(templates_path: Path, records_path: Path) -> Iterator[RecordSubmission]:
    """Templates (n, d) or (n, samples, d) paired row by row with reference ids and attributes."""
    templates = _load_templates(templates_path)
    count = 0
    for position, row in enumerate(_metadata_rows(records_path)):
        if position >= len(templates):
            raise ValueError(f"{records_path} has more rows than {templates_path} has templates")
        sample = np.asarray(templates[position])
        yield RecordSubmission(
            position,
            str(row.get("reference_id") or ""),
            EncodedTemplates(floats=sample.reshape(-1, sample.shape[-1])),
            dict(row.get("attributes") or {}),
        )
        count += 1
    if count != len(templates):
        raise ValueError(f"{templates_path} has {len(templates)} rows but {records_path} has {count}")


def read_inline(path: Path) -> Iterator[RecordSubmission]:
    """JSON Lines of ``{"reference_id", "templates": [[float...]...], "attributes": {...}}``."""
    with open(path, encoding="utf-8") as handle:
        position = 0
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            yield RecordSubmission(
                position,
                str(row.get("reference_id") or ""),
                EncodedTemplates(floats=row.get("templates")),
                dict(row.get("attributes") or {}),
            )
            position += 1
