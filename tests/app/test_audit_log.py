"""The verifiable log through the API: events are leaves of an RFC 9162 tree whose signed
checkpoints and proofs check out, checkpoints follow their policy, and a country's auditor sees
the events touching its country, with proofs, and nothing else."""

import base64
import hashlib
import json

import numpy as np
import pytest

from app.audit import merkle
from app.audit.notes import Checkpoint, Verifier
from tests.harness import Service, case_body, identification_body, records

FIELDS = ("seq", "at", "principal_id", "role", "action", "resource", "outcome", "details", "prev_hash")


def canonical(event: dict) -> bytes:
    return json.dumps({f: event[f] for f in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def tree_hash(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 over the entries, from scratch."""
    if len(entries) == 1:
        return merkle.leaf_hash(entries[0])
    k = 1 << ((len(entries) - 1).bit_length() - 1)
    return merkle.node_hash(tree_hash(entries[:k]), tree_hash(entries[k:]))


def checkpoint_now(service: Service, auditor: dict) -> Checkpoint:
    response = service.client.post("/v1/audit/checkpoint", headers=auditor)
    assert response.status_code == 200, response.text
    key = service.client.get("/v1/audit/public-key", headers=auditor).json()
    checkpoint = Checkpoint.parse(Verifier.parse(key["verifier_key"]).open(response.json()["checkpoint"]))
    assert checkpoint.size == response.json()["tree_size"]
    return checkpoint


def events(service: Service, auditor: dict, up_to: int) -> list[dict]:
    page = service.client.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    return [event for event in page if event["seq"] <= up_to]


def hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(value) for value in values]


def assert_included(service: Service, auditor: dict, event: dict, checkpoint: Checkpoint) -> None:
    response = service.client.get(
        f"/v1/audit/proof/inclusion?seq={event['seq']}&tree_size={checkpoint.size}", headers=auditor
    )
    assert response.status_code == 200, response.text
    leaf = merkle.leaf_hash(canonical(event))
    assert base64.b64decode(response.json()["leaf_hash"]) == leaf
    merkle.verify_inclusion(event["seq"] - 1, checkpoint.size, leaf, hashes(response.json()["hashes"]), checkpoint.root)


def test_every_event_is_a_leaf_of_the_signed_tree_and_the_tree_only_grows(service):
    auditor = service.principal("auditor")
    gallery = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    service.client.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records(3)}, headers=registry)
    first = checkpoint_now(service, auditor)
    listed = events(service, auditor, first.size)
    assert [event["seq"] for event in listed] == list(range(1, first.size + 1))
    assert first.root == tree_hash([canonical(event) for event in listed])
    for event in listed:
        assert_included(service, auditor, event, first)

    service.client.delete(f"/v1/galleries/{gallery}/records/REF-00001", headers=registry)
    second = checkpoint_now(service, auditor)
    assert second.size > first.size
    proof = service.client.get(f"/v1/audit/proof/consistency?from={first.size}&to={second.size}", headers=auditor)
    merkle.verify_consistency(first.size, second.size, first.root, second.root, hashes(proof.json()["hashes"]))
    with pytest.raises(merkle.ProofError):
        forged_old = hashlib.sha256(b"a root the log never had").digest()
        merkle.verify_consistency(first.size, second.size, forged_old, second.root, hashes(proof.json()["hashes"]))


def test_proofs_of_trees_the_log_has_not_reached_are_refused(service):
    auditor = service.principal("auditor")
    size = checkpoint_now(service, auditor).size
    beyond = service.client.get(f"/v1/audit/proof/inclusion?seq=1&tree_size={size + 100}", headers=auditor)
    assert beyond.status_code == 409 and beyond.json()["error"]["code"] == "tree_size_out_of_range"
    backwards = service.client.get(f"/v1/audit/proof/consistency?from={size}&to=1", headers=auditor)
    assert backwards.status_code == 422 and backwards.json()["error"]["code"] == "invalid_proof_range"
    unknown = service.client.get(f"/v1/audit/proof/inclusion?seq={size + 100}&tree_size={size}", headers=auditor)
    assert unknown.status_code == 404
    both = service.client.get(f"/v1/audit/proof/inclusion?seq={size + 100}&tree_size={size + 100}", headers=auditor)
    assert both.status_code == 409 and both.json()["error"]["code"] == "tree_size_out_of_range"


def test_a_checkpoint_is_signed_after_m_events_and_not_before(tmp_path, database_url):
    service = Service(
        tmp_path / "data",
        database_url,
        audit_checkpoint_events=5,
        audit_checkpoint_interval_s=3600,
        audit_sequence_interval_s=3600,
    )
    try:
        sequencer = service.runtime.passes.sequencer
        auditor = service.principal("auditor")
        signed = sequencer.checkpoint_now().size
        for _ in range(4):
            service.principal("auditor")
        assert sequencer.run_once().signed is None  # 4 events since the last checkpoint: none yet
        service.principal("auditor")
        result = sequencer.run_once()
        assert result.signed is not None and result.signed.size == signed + 5
        latest = service.client.get("/v1/audit/checkpoint", headers=auditor).json()
        assert latest["tree_size"] == signed + 5
        metrics = service.client.get("/metrics", headers=service.admin).text
        assert "readmit_audit_sequencing_delay_seconds_count" in metrics
        assert f"readmit_audit_tree_size {float(signed + 5)}" in metrics
    finally:
        service.close()


def test_a_countrys_auditor_sees_the_events_touching_it_with_proofs_and_nothing_else(service):
    rng = np.random.default_rng(3)
    senegal, morocco = service.gallery("SEN", dimension=8), service.gallery("MAR", dimension=8)
    people = rng.standard_normal((4, 8)).round(4)
    for gallery, country in ((senegal, "SEN"), (morocco, "MAR")):
        registry = service.principal("registry", country)
        body = {"records": [{"reference_id": f"{country}-{i}", "templates": [people[i].tolist()]} for i in range(4)]}
        assert (
            service.client.post(f"/v1/galleries/{gallery}/records:batch", json=body, headers=registry).status_code
            == 200
        )
    service.client.post(
        "/v1/agreements",
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
        headers=service.admin,
    )
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    case = service.client.post("/v1/cases", json=case_body("FRA-1"), headers=police).json()
    searched = service.client.post(
        f"/v1/cases/{case['id']}/identifications", json=identification_body(people[1]), headers=police
    )
    assert searched.status_code in (200, 202), searched.text
    sen_auditor, operator_auditor = service.principal("auditor", "SEN"), service.principal("auditor")
    checkpoint = checkpoint_now(service, operator_auditor)

    everything = events(service, operator_auditor, checkpoint.size)
    seen = events(service, sen_auditor, checkpoint.size)
    touching = [e for e in everything if "SEN" in e["details"].get("countries", [])]
    assert [e["seq"] for e in seen] == [e["seq"] for e in touching]
    actions = {e["action"] for e in seen}
    assert {"gallery.create", "record.enrol", "agreement.create", "case.open", "search.submit"} <= actions
    assert not any(e["resource"] == f"gallery/{morocco}" for e in seen)
    for event in seen:
        assert_included(service, sen_auditor, event, checkpoint)
    moroccan = next(e for e in everything if e["resource"] == f"gallery/{morocco}" and e["action"] == "record.enrol")
    hidden = service.client.get(
        f"/v1/audit/proof/inclusion?seq={moroccan['seq']}&tree_size={checkpoint.size}", headers=sen_auditor
    )
    assert hidden.status_code == 404
    assert_included(service, operator_auditor, moroccan, checkpoint)
