"""Templates, probes and index snapshots are sealed at rest: a copy of the data folder without
the master key holds no biometric bytes; a wrong or missing key stops the start; a rotated key
opens everything; an altered or moved ciphertext is refused."""

import base64
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.encryption.exceptions import EncryptionOff, MasterKeyMissing, SealedValueRefused, WrongMasterKey
from app.galleries.models import Template
from app.matching.models import Search
from app.matching.probes import open_probes
from tests.harness import Service, case_body

DIMENSION = 32


def l2_gallery(service: Service) -> int:
    """A gallery that stores templates exactly as sent (no normalisation), so the bytes a test
    looks for are the float32 bytes it sent."""
    return service.gallery("SEN", dimension=DIMENSION, metric="l2")


def enrol(service: Service, gallery_id: int, templates: np.ndarray) -> None:
    registry = service.principal("registry", "SEN")
    body = {
        "records": [
            {"reference_id": f"SEN-{i:04d}", "templates_b64": [base64.b64encode(t.astype("<f4").tobytes()).decode()]}
            for i, t in enumerate(templates)
        ]
    }
    response = service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json=body, headers=registry)
    assert response.status_code == 200 and response.json()["inserted"] == len(templates), response.text


def identify(service: Service, probe: np.ndarray) -> list[str]:
    """Reference ids of the candidates of one identification of ``probe``."""
    admin = service.admin
    agreement = {
        "receiving_country": "FRA",
        "origin_country": "SEN",
        "modalities": ["face"],
        "valid_from": "2026-01-01",
    }
    service.client.post("/v1/agreements", json=agreement, headers=admin)  # a second time: a conflict, ignored
    police = service.principal("border_police", "FRA", "FRA-DCPAF")
    case = service.client.post("/v1/cases", json=case_body(f"C-{os.urandom(4).hex()}"), headers=police).json()
    body = {
        "modality": "face",
        "template_format": {"model": "arcface-r100", "dimension": DIMENSION, "metric": "l2"},
        "probes": [probe.tolist()],
        "wait_ms": 5000,
    }
    response = service.client.post(f"/v1/cases/{case['id']}/identifications", json=body, headers=police)
    assert response.status_code == 200, response.text
    return [c["reference_id"] for c in response.json()["candidates"]]


def stored_bytes(data_dir: Path) -> bytes:
    """Every file of the data folder (database, its write-ahead log, snapshots) end to end."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file())


@pytest.mark.parametrize("encrypted", [True, False])
def test_the_data_folder_holds_no_template_or_probe_bytes(tmp_path, encrypted):
    """With encryption off the same search finds every template: the test looks where they would be."""
    templates = np.random.default_rng(1).standard_normal((40, DIMENSION)).astype(np.float32)
    service = Service(tmp_path / "data", None, encrypt_at_rest=encrypted)
    try:
        gallery_id = l2_gallery(service)
        enrol(service, gallery_id, templates)
        probe = templates[7] + np.float32(0.01)
        assert identify(service, probe)[0] == "SEN-0007"
        service.runtime.registry.snapshot(gallery_id, force=True)
    finally:
        service.close()
    stored = stored_bytes(tmp_path / "data")
    wanted = [t.astype("<f4").tobytes() for t in templates] + [probe.astype("<f4").tobytes()]
    found = [w for w in wanted if w[: DIMENSION * 2] in stored or w[DIMENSION * 2 :] in stored]
    assert len(found) == (0 if encrypted else len(wanted))


def test_a_wrong_or_missing_master_key_stops_the_start_and_the_commands(tmp_path, monkeypatch):
    service = Service(tmp_path / "data", None)
    gallery_id = l2_gallery(service)
    enrol(service, gallery_id, np.ones((3, DIMENSION), np.float32))
    service.close()

    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WrongMasterKey, match="data keys are wrapped by master key local:"):
        Service(tmp_path / "data", None, master_key=other)
    with pytest.raises(MasterKeyMissing, match="does not exist, and the data keys are wrapped by"):
        Service(tmp_path / "data", None, master_key_file=tmp_path / "nowhere.key")

    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("READMIT_MASTER_KEY", other)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["index", "rebuild"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1 and "data keys are wrapped by master key" in result.output


def test_sealed_data_with_encryption_turned_off_stops_the_start(tmp_path):
    Service(tmp_path / "data", None).close()
    with pytest.raises(EncryptionOff, match="encryption at rest is off"):
        Service(tmp_path / "data", None, encrypt_at_rest=False)


def test_a_rotated_master_key_opens_every_gallery_and_the_old_one_none(tmp_path, monkeypatch, database_url):
    key_file = tmp_path / "keys" / "master.key"
    templates = np.random.default_rng(2).standard_normal((30, DIMENSION)).astype(np.float32)
    service = Service(tmp_path / "data", database_url, master_key_file=key_file)
    gallery_id = l2_gallery(service)
    enrol(service, gallery_id, templates)
    service.close()
    old_key = key_file.read_text()

    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("READMIT_MASTER_KEY_FILE", str(key_file))
    if database_url:
        monkeypatch.setenv("READMIT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["keys", "rotate"])
        status = CliRunner().invoke(cli, ["keys", "status"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert key_file.read_text() != old_key and not key_file.with_name("master.key.new").exists()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    new_id = result.output.split("-> ")[1].split()[0]
    assert f"gallery/{gallery_id}\twrapped by {new_id}" in status.output

    service = Service(tmp_path / "data", database_url, master_key_file=key_file)
    try:
        assert service.runtime.registry.load_events[0]["source"] == "snapshot"  # the data key did not change
        assert identify(service, templates[4])[0] == "SEN-0004"
        service.runtime.rebuild_index(gallery_id)  # every template still opens
        assert identify(service, templates[9])[0] == "SEN-0009"
    finally:
        service.close()
    with pytest.raises(WrongMasterKey):
        Service(tmp_path / "data", database_url, master_key=old_key.strip())


def test_an_altered_or_moved_ciphertext_is_refused(service):
    gallery_id = l2_gallery(service)
    enrol(service, gallery_id, np.random.default_rng(3).standard_normal((4, DIMENSION)).astype(np.float32))
    identify(service, np.ones(DIMENSION, np.float32))
    with service.runtime.sessions.begin() as session:
        first, second = session.execute(select(Template.id, Template.vector).order_by(Template.id).limit(2)).all()
        session.execute(update(Template).where(Template.id == first.id).values(vector=second.vector))
    with pytest.raises(SealedValueRefused, match="moved from another place"):
        service.runtime.rebuild_index(gallery_id)

    with service.runtime.sessions.begin() as session:
        search = session.scalars(select(Search)).one()
        altered = bytearray(search.probes)
        altered[-1] ^= 1
        with pytest.raises(SealedValueRefused):
            open_probes(session, search.id, bytes(altered))
        with pytest.raises(SealedValueRefused):  # another search's place
            open_probes(session, search.id + 1, search.probes)
        assert len(open_probes(session, search.id, search.probes)) == 4 * DIMENSION
        # as a search left queued by a previous process, with its probes altered, claimed by this one
        owner = service.runtime.executor.leases.owner
        session.execute(
            update(Search).values(status="queued", probes=bytes(altered), finished_at=None, lease_owner=owner)
        )
    service.runtime.executor.run([search.id], SimpleNamespace(give_back=lambda: None, take_back=lambda: None))
    with service.runtime.sessions() as session:
        failed = session.get(Search, search.id)
        assert (failed.status, failed.error) == ("failed", "sealed_value_refused")


def test_clear_data_of_an_older_database_is_sealed_at_the_next_start(tmp_path, database_url):
    templates = np.random.default_rng(4).standard_normal((25, DIMENSION)).astype(np.float32)
    service = Service(tmp_path / "data", database_url, encrypt_at_rest=False)
    gallery_id = l2_gallery(service)
    enrol(service, gallery_id, templates)
    identify(service, templates[3])
    service.close()
    wanted = [t.astype("<f4").tobytes() for t in templates]
    if database_url is None:
        assert all(w in stored_bytes(tmp_path / "data") for w in wanted)

    service = Service(tmp_path / "data", database_url)
    try:
        assert service.runtime.registry.load_events[0]["source"].startswith("rebuilt: corrupt snapshot")
        assert identify(service, templates[12])[0] == "SEN-0012"
        with service.runtime.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM data_keys")).scalar_one() == 2
            vectors = connection.execute(text("SELECT vector FROM templates")).scalars().all()
            probes = connection.execute(text("SELECT probes FROM searches")).scalars().all()
    finally:
        service.close()
    assert {bytes(v) for v in vectors}.isdisjoint(wanted) and len(vectors) == 25
    assert all(len(p) == 4 * DIMENSION + 29 for p in probes)
    if database_url is None:  # no old copy left in the file's free pages or its log either
        stored = stored_bytes(tmp_path / "data")
        assert [w for w in wanted if w[: DIMENSION * 2] in stored or w[DIMENSION * 2 :] in stored] == []
