"""The terms an identification is admitted on (its case, the agreements in force, the galleries)
served from the process's cache, and never once a change to them has committed."""

import time

import pytest
from sqlalchemy import update

from app.cases.models import Case
from app.core.cache import CommittedRowsCache, NotCached
from app.db.session import transaction
from app.matching import terms
from tests.app.test_change_feed import applied_everywhere
from tests.app.test_identification import DIM, enrol, identify, open_case, searchable_sen_gallery
from tests.harness import Service


@pytest.fixture
def searchable(service, people):
    _, police = searchable_sen_gallery(service, people)
    return service, police


def skipped(answer) -> dict[str, str]:
    assert answer.status_code == 200, answer.text
    return {entry["country"]: entry["reason"] for entry in answer.json()["skipped"]}


def test_a_second_identification_of_a_case_reads_no_terms_from_the_database(searchable, people, monkeypatch):
    service, police = searchable
    case = open_case(service, police)
    assert identify(service, police, case["id"], people.mated_probes[0]).json()["status"] == "done"

    def no_read(*_args, **_kwargs):
        raise AssertionError("read from the database")

    monkeypatch.setattr(terms, "case_terms", no_read)
    monkeypatch.setattr(terms, "countries_in_force", no_read)
    monkeypatch.setattr(terms.DatabaseTerms, "galleries", no_read)
    answer = identify(service, police, case["id"], people.mated_probes[1])
    assert answer.status_code == 200 and answer.json()["status"] == "done", answer.text
    assert answer.json()["candidates"][0]["reference_id"] == f"SEN-{people.mated_ids[1]:04d}"


def test_a_closed_case_refuses_its_next_identification_at_once(searchable, people):
    service, police = searchable
    case = open_case(service, police)
    assert identify(service, police, case["id"], people.mated_probes[0]).status_code == 200
    closed = service.client.patch(f"/v1/cases/{case['id']}", headers=police, json={"status": "closed"})
    assert closed.status_code == 200, closed.text
    refused = identify(service, police, case["id"], people.mated_probes[1])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "case_not_open", refused.text


def test_a_case_changed_by_any_statement_is_read_again(searchable, people):
    """Not only the use cases' writes: a Core UPDATE through any session of the service's engine."""
    service, police = searchable
    case = open_case(service, police)
    assert identify(service, police, case["id"], people.mated_probes[0]).status_code == 200
    with transaction(service.runtime.sessions) as session:
        session.execute(update(Case).where(Case.id == case["id"]).values(status="unidentified"))
    refused = identify(service, police, case["id"], people.mated_probes[1])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "case_not_open", refused.text


def test_an_agreement_and_a_gallery_made_after_an_identification_count_for_the_next(searchable, people):
    service, police = searchable
    case = open_case(service, police, countries=("SEN", "MLI"))
    assert skipped(identify(service, police, case["id"], people.mated_probes[0])) == {"MLI": "no_agreement"}
    agreement = {
        "receiving_country": "FRA",
        "origin_country": "MLI",
        "modalities": ["face"],
        "valid_from": "2020-01-01",
    }
    assert service.client.post("/v1/agreements", headers=service.admin, json=agreement).status_code == 201
    assert skipped(identify(service, police, case["id"], people.mated_probes[1])) == {"MLI": "no_gallery"}
    mli = service.gallery("MLI", dimension=DIM)
    enrol(service, mli, service.principal("registry", "MLI"), people, "MLI")
    answer = identify(service, police, case["id"], people.mated_probes[2])
    assert skipped(answer) == {}
    assert {c["reference_id"].split("-")[0] for c in answer.json()["candidates"]} == {"SEN", "MLI"}


def test_a_read_that_raced_a_commit_is_not_kept():
    cache = CommittedRowsCache(ttl_s=60)
    began = cache.generation
    cache.invalidate()  # a change committed while the read ran
    cache.put("key", "as read before the change", began)
    with pytest.raises(NotCached):
        cache.get("key")
    cache.put("key", "as read after", cache.generation)
    assert cache.get("key") == "as read after"


def test_no_cache_when_keys_are_not_cached():
    cache = CommittedRowsCache(ttl_s=0)
    cache.put("key", "value", cache.generation)
    with pytest.raises(NotCached):
        cache.get("key")


def test_a_case_closed_through_another_node_is_refused_here_once_its_commit_is_told(tmp_path, database_url, people):
    """Two nodes on one PostgreSQL: the closing transaction notifies the other node, which empties
    its cache of terms then, long before its entries would age out."""
    if database_url is None:
        pytest.skip("only PostgreSQL tells other processes of a commit")
    a = Service(tmp_path / "a", database_url)
    b = Service(tmp_path / "b", database_url, audit_key_file=a.settings.audit_key_path, key_cache_s=600)
    try:
        _, police = searchable_sen_gallery(a, people)
        applied_everywhere(a, b)
        case = open_case(a, police)
        assert identify(b, police, case["id"], people.mated_probes[0]).json()["status"] == "done"
        assert a.client.patch(f"/v1/cases/{case['id']}", headers=police, json={"status": "closed"}).is_success
        deadline = time.monotonic() + 10
        while (answer := identify(b, police, case["id"], people.mated_probes[1])).status_code == 200:
            assert time.monotonic() < deadline, "node B never learnt of the closing"
            time.sleep(0.05)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "case_not_open", answer.text
    finally:
        b.close()
        a.close()
