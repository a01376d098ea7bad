"""Links between cases: a person held twice by one agency under two names is linked, after the
identification, to the other case; another state's case of the same person, and a case whose
legal basis is consent, are not."""

import threading
import time

from sqlalchemy import text

from app.cases.links import ProbeBook, link_pending
from app.db.session import transaction
from tests.harness import case_body, identification_body

DIM = 512


def agreement(service, receiving):
    body = {"receiving_country": receiving, "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"}
    assert service.client.post("/v1/agreements", headers=service.admin, json=body).status_code == 201


def identified_case(service, police, ref, probe, legal_basis="readmission_agreement"):
    case = service.client.post("/v1/cases", headers=police, json=case_body(ref, 1, 45, ("SEN",), legal_basis)).json()
    search = service.client.post(
        f"/v1/cases/{case['id']}/identifications", headers=police, json=identification_body(probe)
    )
    assert search.json()["status"] == "done", search.text
    return case["id"]


def links(service, police, case_id, expected, timeout_s=20):
    """The case's links once there are ``expected`` of them (or as they are at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = service.client.get(f"/v1/cases/{case_id}/links", headers=police)
        assert response.status_code == 200, response.text
        if len(response.json()) >= expected or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.05)


def searchable_sen_faces(service, people):
    """A SEN face gallery of 100 people and FRA's agreement with SEN: the searches whose probes
    the links compare need a gallery to run against."""
    gallery = service.gallery("SEN", dimension=DIM)
    registry = service.principal("registry", "SEN")
    records = [{"reference_id": f"SEN-{i}", "templates": [people.gallery[2 * i].tolist()]} for i in range(100)]
    service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records}, headers=registry)
    agreement(service, "FRA")


def test_the_same_person_held_twice_by_one_agency_is_linked_and_no_one_else(service, people):
    searchable_sen_faces(service, people)
    agreement(service, "DEU")
    paris = service.principal("border_police", "FRA", "FRA-DCPAF")
    berlin = service.principal("border_police", "DEU", "DEU-BPOL")
    person = int(people.mated_ids[-1])  # not enrolled: links compare probes with probes
    samples = people.gallery[people.gallery_ids == person]
    stranger = people.nonmated_probes[0]

    first = identified_case(service, paris, "P-1", samples[0])
    unrelated = identified_case(service, paris, "P-2", stranger)
    consented = identified_case(service, paris, "P-3", samples[1], legal_basis="consent")
    elsewhere = identified_case(service, berlin, "B-1", samples[1])
    second = identified_case(service, paris, "P-4", people.mated_probes[-1])

    [link] = links(service, paris, second, 1)
    assert (link["case_id"], link["external_ref"], link["band"]) == (first, "P-1", "match")
    assert link["score"] > 0.3
    [back] = links(service, paris, first, 1)
    assert back["case_id"] == second and back["score"] == link["score"]
    assert links(service, paris, unrelated, 1, timeout_s=0) == []
    assert links(service, paris, consented, 1, timeout_s=0) == [], "consent does not allow re-use"
    assert links(service, berlin, elsewhere, 1, timeout_s=0) == [], "another state's case is never linked"
    assert service.client.get(f"/v1/cases/{first}/links", headers=berlin).status_code == 404

    auditor = service.principal("auditor")
    events = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    linked = [e for e in events if e["action"] == "case.link"]
    assert [(e["resource"], e["details"]["linked_case"]) for e in linked] == [(f"case/{second}", first)]


def test_erased_probes_are_never_linked_and_stored_probes_are_opened_and_read_once(service, people, monkeypatch):
    from sqlalchemy import select, update

    from app.cases import links as case_links
    from app.matching.models import Search

    opened: list[int] = []
    real_open = case_links.open_probes

    def counting_open(session, search_id, sealed):
        opened.append(search_id)
        return real_open(session, search_id, sealed)

    read: list[int] = []  # the searches whose rows a look read: each once between full looks
    real_linkable = case_links._linkable

    def counting_linkable(session, among):
        rows = real_linkable(session, among)
        read.extend(row.search_id for row in rows)
        return rows

    monkeypatch.setattr(case_links, "open_probes", counting_open)
    monkeypatch.setattr(case_links, "_linkable", counting_linkable)
    searchable_sen_faces(service, people)
    paris = service.principal("border_police", "FRA", "FRA-DCPAF")
    person = int(people.mated_ids[-1])
    samples = people.gallery[people.gallery_ids == person]

    first = identified_case(service, paris, "P-1", samples[0])
    for number in range(3):
        identified_case(service, paris, f"S-{number}", people.nonmated_probes[number])
    service.runtime.passes.linker.run_once()
    with service.runtime.sessions() as session:
        first_search = session.scalar(select(Search.id).where(Search.case_id == first))
    assert first_search in opened
    assert sorted(opened) == sorted(set(opened)), "each stored probe opened once"
    with service.runtime.sessions.begin() as session:  # retention erases the first case's probes
        session.execute(update(Search).where(Search.case_id == first).values(probes=None))
    second = identified_case(service, paris, "P-2", samples[1])
    third = identified_case(service, paris, "P-3", people.mated_probes[-1])
    service.runtime.passes.linker.run_once()
    assert [link["case_id"] for link in links(service, paris, second, 1)] == [third], "stored probes are linked"
    assert links(service, paris, first, 1, timeout_s=0) == [], "erased probes are never linked"
    assert sorted(opened) == sorted(set(opened)), "each stored probe opened once"
    service.runtime.passes.linker.run_once()
    assert len(read) >= 6 and sorted(read) == sorted(set(read)), "a look reads the rows of the searches new to it"


def test_a_restarted_service_links_with_thresholds_it_reads_from_the_database(service, people):
    """After a restart the linker's first pass reads the gallery's calibration from the
    database: never from inside its own write transaction (on SQLite it would wait on itself,
    and the service would never stop)."""
    searchable_sen_faces(service, people)
    paris = service.principal("border_police", "FRA", "FRA-DCPAF")
    samples = people.gallery[people.gallery_ids == int(people.mated_ids[-1])]
    first = identified_case(service, paris, "P-1", samples[0])
    service.restart()
    second = identified_case(service, paris, "P-2", samples[1])
    [link] = links(service, paris, second, 1)
    assert link["case_id"] == first


def test_a_linking_pass_looks_without_waiting_for_the_writers(service):
    """The look reads through the reading engine: on SQLite, through the writing engine it waited
    for the writers' turn (and then held it while it only read) behind whatever was being written."""
    runtime = service.runtime
    passes: list[tuple[int, bool]] = []
    with transaction(runtime.sessions) as writing:
        writing.execute(text("SELECT 1"))  # the writers' turn is this test's until the block ends
        linking = threading.Thread(
            target=lambda: passes.append(
                link_pending(runtime.sessions, runtime.read_sessions, ProbeBook(), lambda _gallery: None)
            )
        )
        linking.start()
        linking.join(timeout=30)
        assert not linking.is_alive(), "the look waited for the writers' turn"
    assert passes == [(0, False)]  # nothing to compare: no write needed either
