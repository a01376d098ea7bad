import itertools

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.audit import sequencing
from tests.harness import records


@pytest.fixture
def audited(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    auditor = service.principal("auditor")
    service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": records(3)}, headers=registry)
    service.client.get(f"/v1/galleries/{gallery_id}/records/REF-00001", headers=registry)
    service.client.delete(f"/v1/galleries/{gallery_id}/records/REF-00002", headers=registry)
    sequencing.catch_up(service.runtime.sessions)  # the events chained, as the tests below tamper with the chain
    return service, auditor


def test_every_change_and_read_is_in_the_chain_without_biometric_data(audited):
    service, auditor = audited
    page = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()
    actions = [event["action"] for event in page["events"]]
    # the bootstrap admin, then the fixture's calls in order (this read is appended after it)
    assert actions == [
        "principal.create",
        "gallery.create",
        "principal.create",
        "principal.create",
        "record.enrol",
        "record.read",
        "record.delete",
    ]
    events = page["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["prev_hash"] == prev["hash"] for prev, e in itertools.pairwise(events))
    text_dump = str(events)
    assert "Name1" not in text_dump and "templates" not in text_dump
    verify = service.client.get("/v1/audit/verify", headers=auditor).json()
    assert verify["ok"] is True and verify["events_checked"] >= len(events)


def test_the_database_refuses_to_edit_or_delete_events(audited):
    service, _ = audited
    with service.runtime.engine.connect() as connection:
        for statement in ("UPDATE audit_events SET outcome = 'forged' WHERE seq = 2", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError, match="append-only"):
                connection.execute(text(statement))
            connection.rollback()


def _drop_triggers(connection):
    if connection.dialect.name == "postgresql":
        connection.execute(text("DROP TRIGGER audit_events_no_change ON audit_events"))
    else:
        connection.execute(text("DROP TRIGGER audit_events_no_update"))
        connection.execute(text("DROP TRIGGER audit_events_no_delete"))


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE audit_events SET outcome = 'forged' WHERE seq = 3",
        "UPDATE audit_events SET details = '{}' WHERE seq = 3",
        "DELETE FROM audit_events WHERE seq = 3",
    ],
)
def test_tampering_by_someone_with_database_access_is_detected(audited, tamper):
    service, auditor = audited
    with service.runtime.engine.begin() as connection:
        _drop_triggers(connection)
        connection.execute(text(tamper))
    verify = service.client.get("/v1/audit/verify", headers=auditor).json()
    assert verify["ok"] is False
    assert verify["first_bad_seq"] in (3, 4)  # the edited event, or the one after a deleted one
