"""A gallery's calibration sample is drawn once and shared through the database: a restarted
service (or another process, or node) reads the same thresholds instead of drawing its own."""

import re

import numpy as np
from sqlalchemy import func, select

from app.matching.models import StoredCalibration
from tests.app.test_identification import identify, open_case, searchable_sen_gallery


def calibrations(service, source: str) -> float:
    """``readmit_calibrations_total{source=…}`` as an operator scrapes it."""
    text = service.client.get("/metrics", headers=service.admin).text
    found = re.search(rf'^readmit_calibrations_total\{{source="{source}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_restarted_service_answers_with_the_stored_calibration(service, people):
    gallery, police = searchable_sen_gallery(service, people)
    case = open_case(service, police, countries=("SEN",))
    probe = people.mated_probes[0]
    first = identify(service, police, case["id"], probe).json()
    drawn = service.runtime.thresholds.for_identification(gallery, 0.001)
    assert calibrations(service, "drawn") == 1
    with service.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(StoredCalibration)) == 1

    service.restart()
    second = identify(service, police, case["id"], probe).json()
    assert service.runtime.thresholds.for_identification(gallery, 0.001) == drawn
    assert (calibrations(service, "drawn"), calibrations(service, "stored")) == (0, 1)
    assert [(c["reference_id"], c["band"]) for c in second["candidates"]] == [
        (c["reference_id"], c["band"]) for c in first["candidates"]
    ]


def test_a_gallery_grown_by_more_than_a_tenth_is_drawn_again(service, people):
    gallery, police = searchable_sen_gallery(service, people)
    case = open_case(service, police, countries=("SEN",))
    identify(service, police, case["id"], people.mated_probes[0])
    registry = service.principal("registry", "SEN")
    strangers = np.random.default_rng(5).standard_normal((100, people.gallery.shape[1])).astype(np.float32)
    more = [
        {"reference_id": f"SEN-NEW-{i:04d}", "templates": [template.tolist()]} for i, template in enumerate(strangers)
    ]
    response = service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": more}, headers=registry)
    assert response.status_code == 200, response.text
    service.restart()  # a new process: the stored sample no longer fits the gallery
    identify(service, police, case["id"], people.mated_probes[1])
    assert (calibrations(service, "drawn"), calibrations(service, "stored")) == (1, 0)
    with service.runtime.sessions() as session:
        stored = session.scalars(select(StoredCalibration)).one()
    assert stored.template_count == len(people.gallery) + len(more)
