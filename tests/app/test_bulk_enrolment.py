"""The enrolment core's bulk path: records written without RETURNING (executemany on SQLite,
COPY on PostgreSQL), ids reserved by the service, templates checked as one block."""

import base64
import json
import re
import threading

import numpy as np
import pytest
from sqlalchemy import select, text

from app.galleries import enrolment
from app.galleries.models import Record
from app.galleries.service import iter_gallery_templates
from app.galleries.templates import EncodedTemplates
from app.principals.models import Principal
from matcher import Metric, TemplateFormat, prepare_templates

DIMENSION = 64
LIMITS = enrolment.EnrolmentLimits(max_records=1000, max_templates_per_record=3)


@pytest.fixture
def gallery(service):
    gallery_id = service.gallery("SEN", dimension=DIMENSION)
    service.principal("registry", "SEN")
    with service.runtime.sessions() as session:
        registry = session.scalars(select(Principal).where(Principal.role == "registry")).one()
    return service, gallery_id, registry


def submission(position, reference, templates, attributes=None):
    return enrolment.RecordSubmission(position, reference, EncodedTemplates(floats=templates), attributes or {})


def stored(service, gallery_id):
    """{reference id: (attributes, the templates as stored)}"""
    with service.runtime.sessions() as session:
        ids = dict(session.execute(select(Record.id, Record.reference_id).where(Record.gallery_id == gallery_id)).all())
        attributes = dict(session.execute(select(Record.reference_id, Record.attributes)).all())
        rows: dict[str, list[np.ndarray]] = {}
        for record_ids, templates in iter_gallery_templates(session, gallery_id, DIMENSION):
            for record_id, template in zip(record_ids.tolist(), templates, strict=True):
                rows.setdefault(ids[record_id], []).append(template)
    return {reference: (attributes[reference], np.vstack(rows[reference])) for reference in ids.values()}


def test_a_mixed_batch_keeps_the_good_records_and_refuses_each_bad_one_with_its_position(gallery):
    service, gallery_id, registry = gallery
    rng = np.random.default_rng(3)
    old = rng.standard_normal((2, DIMENSION))
    enrolment.enrol(
        service.runtime.sessions,
        service.runtime.registry,
        registry,
        gallery_id,
        [submission(0, "SAME", old[:1], {"a": "1"}), submission(1, "CHANGED", old[1:])],
        LIMITS,
    )
    good, changed = rng.standard_normal((2, DIMENSION)), rng.standard_normal((1, DIMENSION))
    nan = rng.standard_normal((2, DIMENSION))
    nan[1, 5] = np.nan
    batch = [
        submission(0, "NEW-1", good),
        submission(1, "", good[:1]),  # missing reference, bad templates too: the reference is named
        submission(2, "BAD-NAN", nan),
        submission(3, "NEW-1", good[:1]),  # a duplicate of an accepted record
        submission(4, "BAD-ZERO", np.zeros((1, DIMENSION))),
        submission(5, "BAD-ZERO", good[:1]),  # its namesake was refused: not a duplicate
        submission(6, "SAME", old[:1], {"a": "1"}),
        submission(7, "CHANGED", changed, {"b": "2"}),
        submission(8, "TOO-MANY", rng.standard_normal((4, DIMENSION))),
        submission(9, "SHORT", rng.standard_normal((1, DIMENSION - 1))),
    ]
    outcome = enrolment.enrol(service.runtime.sessions, service.runtime.registry, registry, gallery_id, batch, LIMITS)
    assert (outcome.inserted, outcome.updated, outcome.unchanged) == (2, 1, 1)
    assert [(r.position, r.reference_id, r.code, r.message) for r in outcome.rejected] == [
        (1, "", "missing_reference", "reference_id is missing"),
        (2, "BAD-NAN", "invalid_template", "template 1 contains NaN or Inf"),
        (3, "NEW-1", "duplicate_reference", "reference_id appears twice in this batch"),
        (4, "BAD-ZERO", "invalid_template", "template 0 has zero norm"),
        (8, "TOO-MANY", "too_many_templates", "4 templates given, at most 3 allowed"),
        (9, "SHORT", "invalid_template", "template dimension 63 does not match the format's 64"),
    ]
    fmt = TemplateFormat("arcface-r100", DIMENSION, Metric.COSINE)
    records = stored(service, gallery_id)
    assert sorted(records) == ["BAD-ZERO", "CHANGED", "NEW-1", "SAME"]
    assert np.array_equal(records["NEW-1"][1], prepare_templates(good, fmt)), "the same bits as one at a time"
    assert records["CHANGED"][0] == {"b": "2"} and np.array_equal(
        records["CHANGED"][1], prepare_templates(changed, fmt)
    )
    index = service.runtime.registry.get(gallery_id)
    assert index.template_count == 2 + 1 + 1 + 1


def test_a_block_from_a_file_gives_what_the_same_records_one_by_one_give(gallery, tmp_path):
    service, gallery_id, registry = gallery
    rng = np.random.default_rng(4)
    templates = rng.standard_normal((6, 2, DIMENSION)).astype(np.float32)
    templates[2, 1, 0] = np.inf
    templates[4] = 0
    references = ["A", "B", "C", "", "E", "A"]
    attributes = [{"n": str(i)} for i in range(6)]
    block = enrolment.RecordBlock(100, references, attributes, templates)
    outcome = enrolment.load(service.runtime.sessions, registry.id, gallery_id, [block], LIMITS)
    assert [(r.position, r.reference_id, r.code) for r in outcome.rejected] == [
        (102, "C", "invalid_template"),
        (103, "", "missing_reference"),
        (104, "E", "invalid_template"),
        (105, "A", "duplicate_reference"),
    ]
    assert outcome.inserted == 2
    again = enrolment.load(
        service.runtime.sessions,
        registry.id,
        gallery_id,
        [[submission(100 + i, references[i], templates[i], attributes[i]) for i in range(6)]],
        LIMITS,
    )
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2), "a rerun changes nothing"
    assert [(r.position, r.code) for r in again.rejected] == [(r.position, r.code) for r in outcome.rejected]
    wrong = enrolment.RecordBlock(0, ["X", "Y"], [{}, {}], rng.standard_normal((2, DIMENSION + 1)))
    refused = enrolment.load(service.runtime.sessions, registry.id, gallery_id, [wrong], LIMITS)
    assert [r.code for r in refused.rejected] == ["invalid_template"] * 2 and refused.inserted == 0
    flat = enrolment.RecordBlock(0, ["X", "Y"], [{}, {}], rng.standard_normal(2))
    refused = enrolment.load(service.runtime.sessions, registry.id, gallery_id, [flat], LIMITS)
    assert [r.code for r in refused.rejected] == ["invalid_template"] * 2 and refused.inserted == 0


def test_stored_rows_read_as_an_orm_write_would_have_stored_them(gallery):
    """No RETURNING, no ORM: the values still go through the columns' own types (JSON text,
    UTC timestamps in SQLAlchemy's format on SQLite)."""
    service, gallery_id, registry = gallery
    rows = np.random.default_rng(5).standard_normal((2, DIMENSION))
    attributes = {"family_name": "Ndiaye", "given_names": "Awa"}
    enrolment.enrol(
        service.runtime.sessions,
        service.runtime.registry,
        registry,
        gallery_id,
        [submission(0, "BULK", rows[:1], attributes), submission(1, "ORM", rows[1:])],
        LIMITS,
    )
    enrolment.enrol(  # replaced through the ORM
        service.runtime.sessions,
        service.runtime.registry,
        registry,
        gallery_id,
        [submission(0, "ORM", rows[:1], attributes)],
        LIMITS,
    )
    with service.runtime.engine.connect() as connection:
        raw = {
            row[0]: row[1:]
            for row in connection.execute(
                text("SELECT reference_id, CAST(attributes AS TEXT), enrolled_at, updated_at FROM records")
            )
        }
    assert json.loads(raw["BULK"][0]) == attributes and raw["BULK"][0] == raw["ORM"][0]
    if service.runtime.engine.dialect.name == "sqlite":
        stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
        assert all(stamp.match(value) for value in (*raw["BULK"][1:], raw["ORM"][2])), raw
    with service.runtime.sessions() as session:
        bulk, orm = (session.scalars(select(Record).where(Record.reference_id == r)).one() for r in ("BULK", "ORM"))
        assert bulk.enrolled_at.tzinfo is not None and orm.updated_at > bulk.enrolled_at


def test_ids_reserved_by_concurrent_enrolments_never_collide(service):
    galleries = [service.gallery("SEN", dimension=DIMENSION, model=f"m{i}") for i in range(2)]
    service.principal("registry", "SEN")
    with service.runtime.sessions() as session:
        registry = session.scalars(select(Principal).where(Principal.role == "registry")).one()
    errors: list[BaseException] = []

    def enrol(worker: int) -> None:
        rng = np.random.default_rng(worker)
        try:
            for batch in range(4):
                submissions = [
                    submission(i, f"W{worker}-{batch}-{i}", rng.standard_normal((1 + i % 2, DIMENSION)))
                    for i in range(40)
                ]
                outcome = enrolment.enrol(
                    service.runtime.sessions,
                    service.runtime.registry,
                    registry,
                    galleries[worker % 2],
                    submissions,
                    LIMITS,
                )
                assert outcome.inserted == 40
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=enrol, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with service.runtime.sessions() as session:
        records = session.execute(select(Record.id, Record.gallery_id, Record.template_count)).all()
        assert len(records) == len({record.id for record in records}) == 4 * 4 * 40
        for gallery_id in galleries:
            expected = sum(r.template_count for r in records if r.gallery_id == gallery_id)
            chunks = list(iter_gallery_templates(session, gallery_id, DIMENSION))
            owners = set(np.concatenate([ids for ids, _ in chunks]).tolist())
            assert owners == {r.id for r in records if r.gallery_id == gallery_id}
            assert service.runtime.registry.get(gallery_id).template_count == expected


def test_a_batch_of_base64_templates_is_decoded_at_once_and_a_bad_one_still_named(gallery):
    service, gallery_id, registry = gallery
    rows = np.random.default_rng(6).standard_normal((4, DIMENSION)).astype("<f4")
    encoded = [base64.b64encode(row.tobytes()).decode() for row in rows]

    def b64(position, reference, texts):
        return enrolment.RecordSubmission(position, reference, EncodedTemplates(base64=texts))

    sessions, registry_index = service.runtime.sessions, service.runtime.registry
    fast = enrolment.enrol(
        sessions, registry_index, registry, gallery_id, [b64(i, f"B-{i}", [encoded[i]]) for i in range(2)], LIMITS
    )
    assert fast.inserted == 2 and not fast.rejected
    mixed = [
        b64(0, "B-2", [encoded[2]]),
        b64(1, "BAD-CHARS", ["not base64!"]),
        b64(2, "BAD-LENGTH", [base64.b64encode(rows[3].tobytes()[:-4]).decode()]),
        b64(3, "B-3", [encoded[3]]),
    ]
    slow = enrolment.enrol(sessions, registry_index, registry, gallery_id, mixed, LIMITS)
    assert slow.inserted == 2
    assert [(r.position, r.code, r.message) for r in slow.rejected] == [
        (1, "invalid_template", "template is not valid base64"),
        (2, "invalid_template", "template has 252 bytes, 256 expected (64 little-endian float32)"),
    ]
    fmt = TemplateFormat("arcface-r100", DIMENSION, Metric.COSINE)
    records = stored(service, gallery_id)
    for i in range(4):
        assert np.array_equal(records[f"B-{i}"][1], prepare_templates(rows[i : i + 1], fmt))
