"""The processes of a node serving one data folder map one decrypted copy of each sealed
snapshot, kept in RAM only: a second runtime maps the first's copy and answers alike; a tampered
snapshot is rebuilt from the database; a folder on a disk is refused for a private copy; the
data folder's last process removes the copies when it stops."""

import base64
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from app.runtime import Runtime
from matcher.plain_copies import filesystem_type
from tests.app.test_encryption_at_rest import DIMENSION, enrol, identify, l2_gallery, stored_bytes
from tests.harness import Service

pytestmark = pytest.mark.skipif(filesystem_type(Path("/dev/shm")) != "tmpfs", reason="needs a tmpfs /dev/shm")


@pytest.fixture
def shm_folder():
    folder = Path("/dev/shm") / f"readmit-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def mapped_inode(array: np.ndarray) -> int:
    """The inode of the file mapped at ``array``'s first byte (/proc/self/maps)."""
    address = array.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(value, 16) for value in fields[0].split("-"))
        if start <= address < end:
            return int(fields[4])
    raise AssertionError("not mapped")


def base_rows(runtime: Runtime, gallery_id: int) -> np.ndarray:
    return runtime.registry.get(gallery_id)._store.segments()[0][1]


@pytest.fixture
def templates():
    return np.random.default_rng(3).standard_normal((60, DIMENSION)).astype(np.float32)


@pytest.fixture
def snapshotted(tmp_path, shm_folder, database_url, templates):
    """A service whose gallery was loaded, at its last start, from its sealed snapshot."""
    service = Service(tmp_path / "data", database_url, shared_memory_dir=shm_folder, share_decrypted_indexes=True)
    gallery_id = l2_gallery(service)
    enrol(service, gallery_id, templates)
    service.restart()
    assert service.runtime.registry.load_events[0]["source"] == "snapshot"
    yield service, gallery_id
    service.close()


def test_a_second_runtime_maps_the_first_ones_copy_and_answers_alike(snapshotted, shm_folder, templates):
    service, gallery_id = snapshotted
    (copy,) = service.runtime.plain_copies.copies()
    assert mapped_inode(base_rows(service.runtime, gallery_id)) == copy.stat().st_ino
    other = Runtime.create(service.settings)  # as another process of the node would
    try:
        other.open_keyring()
        assert other.open_index(gallery_id) == "snapshot"
        assert mapped_inode(base_rows(other, gallery_id)) == copy.stat().st_ino
        assert other.plain_copies.copies() == [copy]
        probes = templates[::7] + np.float32(0.01)
        ours, theirs = service.runtime.registry.get(gallery_id), other.registry.get(gallery_id)
        got, want = theirs.search(probes, 3), ours.search(probes, 3)
        np.testing.assert_array_equal(got.record_ids, want.record_ids)
        np.testing.assert_array_equal(got.scores, want.scores)
    finally:
        other.registry.close_all()
        other.release_plain_copies()  # the service still runs: the copy stays
        other.engine.dispose()
    assert copy.exists()
    assert identify(service, templates[9] + np.float32(0.01))[0] == "SEN-0009"
    newcomer = np.full(DIMENSION, 3.0, np.float32)
    body = {"records": [{"reference_id": "SEN-NEW", "templates_b64": [base64.b64encode(newcomer.tobytes()).decode()]}]}
    registry = service.principal("registry", "SEN")
    assert (
        service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json=body, headers=registry).status_code == 200
    )
    assert identify(service, newcomer)[0] == "SEN-NEW"  # added on top of the shared base
    assert mapped_inode(base_rows(service.runtime, gallery_id)) == copy.stat().st_ino
    service.close()
    assert list(shm_folder.iterdir()) == []  # the last one removed them
    service.client = service._start()  # for the fixture's close


def test_a_tampered_snapshot_is_rebuilt_from_the_database(snapshotted, shm_folder, templates):
    service, gallery_id = snapshotted
    service.close()
    path = service.settings.index_dir / f"gallery-{gallery_id}.snapshot"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 1  # inside the templates' ciphertext
    path.write_bytes(bytes(data))
    service.client = service._start()
    assert service.runtime.registry.load_events[0]["source"].startswith("rebuilt: corrupt snapshot")
    assert "cannot be decrypted" in service.runtime.registry.load_events[0]["source"]
    assert identify(service, templates[4] + np.float32(0.01))[0] == "SEN-0004"


def test_a_folder_on_a_disk_is_not_used_and_each_process_decrypts_its_own(tmp_path, templates, caplog):
    disk = tmp_path / "not-ram"
    disk.mkdir()
    service = Service(tmp_path / "data", None, shared_memory_dir=disk, share_decrypted_indexes=True)
    try:
        assert service.runtime.plain_copies is None
        assert "each process decrypts its own copy of the indexes" in caplog.text
        gallery_id = l2_gallery(service)
        enrol(service, gallery_id, templates)
        service.restart()
        assert service.runtime.registry.load_events[0]["source"] == "snapshot"
        assert identify(service, templates[2] + np.float32(0.01))[0] == "SEN-0002"
    finally:
        service.close()
    assert list(disk.iterdir()) == []
    stored = stored_bytes(tmp_path)
    assert not any(t.astype("<f4").tobytes()[: DIMENSION * 2] in stored for t in templates)


def test_one_process_decrypts_privately_and_sweeps_copies_killed_processes_left(tmp_path, shm_folder, templates):
    """Unless told, a process serving alone keeps its decrypted indexes in its own memory (nobody
    to share with), and still removes the copies that killed processes of the node left."""
    from matcher.plain_copies import SharedPlainCopies, namespace_of

    earlier = SharedPlainCopies(shm_folder, namespace_of(tmp_path / "a data folder since deleted"))
    earlier.map(tmp_path / "gallery-1.snapshot", {"change_seq": 1}, 16, lambda target: target.fill(7))
    (left,) = earlier.copies()
    earlier._users.close()  # killed: its lock is gone, its copy stays
    service = Service(tmp_path / "data", None, shared_memory_dir=shm_folder)
    try:
        assert service.runtime.plain_copies is None
        assert not left.exists()
        gallery_id = l2_gallery(service)
        enrol(service, gallery_id, templates)
        service.restart()
        assert service.runtime.registry.load_events[0]["source"] == "snapshot"
        assert not any(shm_folder.glob("readmit-*.plain")), "no shared copy for one process"
        assert identify(service, templates[5] + np.float32(0.01))[0] == "SEN-0005"
    finally:
        service.close()
