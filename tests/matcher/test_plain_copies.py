"""One decrypted copy of a sealed snapshot per node: every loader maps the same RAM-backed file,
answers as a private decryption would, and no clear copy lands on a disk or outlives its users."""

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from matcher import GalleryIndex, IndexKind, IndexPolicy, SnapshotError, SnapshotKey
from matcher.plain_copies import NotRamBacked, SharedPlainCopies, filesystem_type, namespace_of

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(filesystem_type(SHM) != "tmpfs", reason="needs a tmpfs /dev/shm")


@pytest.fixture
def shm_folder():
    folder = SHM / f"readmit-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def key():
    return SnapshotKey("gallery-1/test", os.urandom(32))


def mapped_file(array: np.ndarray) -> tuple[int, str]:
    """(inode, path) of the file mapped at ``array``'s first byte, from /proc/self/maps."""
    address = array.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(value, 16) for value in fields[0].split("-"))
        if start <= address < end:
            return int(fields[4]), fields[5] if len(fields) > 5 else ""
    raise AssertionError("address not mapped")


def saved(tmp_path, face_format, rng, key, count=400, kind=None):
    index = GalleryIndex(face_format, IndexPolicy(forced_kind=kind, training_sample=2000))
    templates = rng.standard_normal((count, 512)).astype(np.float32)
    index.add(np.arange(count), templates)
    path = tmp_path / "gallery-1.snapshot"
    index.save(path, change_seq=7, key=key)
    return path, templates


@pytest.mark.parametrize("kind", [IndexKind.EXACT, IndexKind.PQ_FASTSCAN])
def test_two_loaders_map_one_shared_copy_and_answer_identically(tmp_path, shm_folder, face_format, rng, key, kind):
    path, templates = saved(tmp_path, face_format, rng, key, count=3000, kind=kind)
    namespace = namespace_of(tmp_path)
    first, second = SharedPlainCopies(shm_folder, namespace), SharedPlainCopies(shm_folder, namespace)
    a = GalleryIndex.load(path, key=key, plain_copies=first)
    b = GalleryIndex.load(path, key=key, plain_copies=second)
    private = GalleryIndex.load(path, key=key)

    (copy,) = first.copies()
    inode_a, file_a = mapped_file(a._store.segments()[0][1])
    assert (inode_a, file_a) == mapped_file(b._store.segments()[0][1])
    assert (inode_a, file_a) == (copy.stat().st_ino, str(copy))
    assert copy.stat().st_mode & 0o777 == 0o400
    probes = templates[::50] + 0.1 * rng.standard_normal((60, 512)).astype(np.float32)
    for index in (a, b):
        got, want = index.search(probes, k=5), private.search(probes, k=5)
        np.testing.assert_array_equal(got.record_ids, want.record_ids)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_changes_after_load_stay_private_and_leave_the_shared_copy_as_it_was(
    tmp_path, shm_folder, face_format, rng, key
):
    path, templates = saved(tmp_path, face_format, rng, key)
    copies = SharedPlainCopies(shm_folder, namespace_of(tmp_path))
    index = GalleryIndex.load(path, key=key, plain_copies=copies)
    (copy,) = copies.copies()
    before = copy.read_bytes()
    new = rng.standard_normal((50, 512)).astype(np.float32)
    index.add(np.arange(1000, 1050), new)  # appended privately: the base stays the shared map
    assert mapped_file(index._store.segments()[0][1])[1] == str(copy)
    index.remove(np.arange(0, 400, 7))  # compacts rows in the base: its moved pages become private
    index.replace([1003], new[:1] * -1)
    assert copy.read_bytes() == before

    reference = GalleryIndex(face_format)
    reference.add(np.arange(400), templates)
    reference.add(np.arange(1000, 1050), new)
    reference.remove(np.arange(0, 400, 7))
    reference.replace([1003], new[:1] * -1)
    probes = np.concatenate([templates[1::9], new, -new[:1]])
    np.testing.assert_array_equal(index.search(probes, k=3).record_ids, reference.search(probes, k=3).record_ids)
    np.testing.assert_array_equal(index.search(probes, k=3).scores, reference.search(probes, k=3).scores)

    index.save(path, change_seq=8, key=key)  # the base and the tail, sealed as one section
    reloaded = GalleryIndex.load(path, key=key)
    np.testing.assert_array_equal(reloaded.search(probes, k=3).record_ids, reference.search(probes, k=3).record_ids)


def test_a_tampered_chunk_is_refused_and_leaves_no_copy(tmp_path, shm_folder, face_format, rng, key):
    path, _ = saved(tmp_path, face_format, rng, key)
    copies = SharedPlainCopies(shm_folder, namespace_of(tmp_path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # inside the templates' ciphertext
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="cannot be decrypted"):
        GalleryIndex.load(path, key=key, plain_copies=copies)
    assert list(shm_folder.glob("*.plain")) == [] and list(shm_folder.glob(".*")) == []


def test_a_newer_snapshot_replaces_the_older_copy_and_the_last_user_removes_all(
    tmp_path, shm_folder, face_format, rng, key
):
    path, templates = saved(tmp_path, face_format, rng, key)
    namespace = namespace_of(tmp_path)
    first, second = SharedPlainCopies(shm_folder, namespace), SharedPlainCopies(shm_folder, namespace)
    old = GalleryIndex.load(path, key=key, plain_copies=first)
    (old_copy,) = first.copies()
    old.add([5000], templates[:1])
    old.save(path, change_seq=8, key=key)
    new = GalleryIndex.load(path, key=key, plain_copies=second)
    (new_copy,) = second.copies()
    assert new_copy != old_copy and "-8-" in new_copy.name
    # the older copy is gone from the folder, and still serves the process that maps it
    assert old.search(templates[:1], k=2).record_ids.tolist() == [[0, 5000]]
    assert new.search(templates[:1], k=2).record_ids.tolist() == [[0, 5000]]

    assert first.close() == []  # the second still runs
    assert second.copies() == [new_copy]
    removed = second.close()
    assert new_copy in removed and not new_copy.exists()
    assert list(shm_folder.glob("*.plain")) == []


def test_a_folder_on_a_disk_is_refused(tmp_path):
    assert filesystem_type(tmp_path) not in {"tmpfs", "ramfs"}  # where the tests keep their files
    with pytest.raises(NotRamBacked, match="not on tmpfs or ramfs"):
        SharedPlainCopies(tmp_path, "x")


def test_a_full_folder_falls_back_to_private_decryption(tmp_path, shm_folder, face_format, rng, key, monkeypatch):
    path, templates = saved(tmp_path, face_format, rng, key)

    def no_space(descriptor, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    index = GalleryIndex.load(path, key=key, plain_copies=SharedPlainCopies(shm_folder, namespace_of(tmp_path)))
    assert index.search(templates[:3], k=1).record_ids[:, 0].tolist() == [0, 1, 2]
    assert list(shm_folder.glob("*.plain")) == []


def test_copies_of_processes_killed_before_their_stop_are_swept_and_copies_in_use_are_kept(
    tmp_path, shm_folder, face_format, rng, key
):
    path, _ = saved(tmp_path, face_format, rng, key)
    killed = SharedPlainCopies(shm_folder, namespace_of(tmp_path / "killed"))
    running = SharedPlainCopies(shm_folder, namespace_of(tmp_path / "running"))
    GalleryIndex.load(path, key=key, plain_copies=killed)
    GalleryIndex.load(path, key=key, plain_copies=running)
    (left,) = killed.copies()
    (used,) = running.copies()
    (shm_folder / f".{left.name}.4242.tmp").write_bytes(b"half written")  # a writer killed mid-copy
    killed._users.close()  # what a SIGKILL does: the lock goes, the files stay

    SharedPlainCopies(shm_folder, namespace_of(tmp_path / "starting"))  # any process opening the folder

    assert not left.exists()
    assert not any(shm_folder.glob(f".{killed.prefix}*")) and not any(shm_folder.glob(f"{killed.prefix}*"))
    assert used.exists(), "a copy still mapped by a running process is kept"
    running.close()
    assert not used.exists()
