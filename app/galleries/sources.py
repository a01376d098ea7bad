"""Record sources for bulk enrolment, read as streams so that millions of records never sit in
memory at once: ``.npy``/``.npz`` templates beside a CSV or JSON Lines file of reference ids and
attributes (row i of one is row i of the other), with optionally a ``.npy`` of the templates'
qualities ((n,) or (n, samples), NaN where unknown), read in blocks of records whose templates are
one array; or JSON Lines with inline templates (and qualities), read in lists of records."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from app.galleries.enrolment import RecordBlock, RecordSubmission
from app.galleries.templates import EncodedTemplates


def _load_templates(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as archive:
            if "templates" not in archive:
                raise ValueError(f"{path} has no array named 'templates'")
            return archive["templates"]
    return np.load(path, mmap_mode="r")


def _metadata_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(reference id, attributes) of each row; empty CSV cells are no attribute."""
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix == ".csv":
            reader = csv.reader(handle)
            header = next(reader, [])
            reference = header.index("reference_id") if "reference_id" in header else None
            names = [(column, name) for column, name in enumerate(header) if column != reference]
            for row in reader:
                if not row:
                    continue
                yield (
                    row[reference] if reference is not None and reference < len(row) else "",
                    {name: row[column] for column, name in names if column < len(row) and row[column] != ""},
                )
        else:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    yield str(row.get("reference_id") or ""), dict(row.get("attributes") or {})


def _load_qualities(path: Path, templates: np.ndarray) -> np.ndarray:
    """The qualities of ``templates``, one row each: refused whole when the file cannot be
    paired with them (a file of another set, not a record's mistake)."""
    qualities = np.load(path, mmap_mode="r")
    if qualities.shape[:1] != templates.shape[:1] or qualities.ndim > 2:
        raise ValueError(
            f"{path} has shape {qualities.shape}: one row of qualities per template row of {templates.shape} expected"
        )
    if not np.issubdtype(qualities.dtype, np.number):
        raise ValueError(f"{path} holds {qualities.dtype}, not numbers")
    return qualities


def read_paired(
    templates_path: Path, records_path: Path, batch: int = 1000, qualities_path: Path | None = None
) -> Iterator[RecordBlock]:
    """Templates (n, d) or (n, samples, d) paired row by row with reference ids and attributes,
    and with qualities if ``qualities_path`` is given, in blocks of ``batch`` records. Files of
    different lengths are refused here, before any block is read: a mismatched pair is most
    likely the wrong file, whose records would be enrolled under other people's templates."""
    templates = _load_templates(templates_path)
    qualities = _load_qualities(qualities_path, templates) if qualities_path is not None else None
    rows = sum(1 for _ in _metadata_rows(records_path))
    if rows != len(templates):
        raise ValueError(f"{templates_path} has {len(templates)} rows but {records_path} has {rows}")
    return _paired_blocks(templates, qualities, _metadata_rows(records_path), batch)


def _paired_blocks(
    templates: np.ndarray, qualities: np.ndarray | None, rows: Iterator[tuple[str, dict[str, Any]]], batch: int
) -> Iterator[RecordBlock]:
    position = 0
    while chunk := list(islice(rows, batch)):
        references, attributes = zip(*chunk, strict=True)
        part = slice(position, position + len(chunk))
        yield RecordBlock(
            position,
            list(references),
            list(attributes),
            np.asarray(templates[part]),
            np.asarray(qualities[part], dtype=np.float64) if qualities is not None else None,
        )
        position += len(chunk)


def read_inline(path: Path, batch: int = 1000) -> Iterator[list[RecordSubmission]]:
    """JSON Lines of ``{"reference_id", "templates": [[float...]...], "qualities": [float | null
    ...], "attributes": {...}}`` (``qualities`` optional), in lists of ``batch`` records."""
    with open(path, encoding="utf-8") as handle:
        lines = (line for line in handle if line.strip())
        position = 0
        while chunk := list(islice(lines, batch)):
            submissions = []
            for line in chunk:
                row = json.loads(line)
                submissions.append(
                    RecordSubmission(
                        position,
                        str(row.get("reference_id") or ""),
                        EncodedTemplates(floats=row.get("templates")),
                        dict(row.get("attributes") or {}),
                        row.get("qualities"),
                    )
                )
                position += 1
            yield submissions
