import numpy as np
import pytest

from matcher import GalleryIndex, IndexKind, IndexPolicy, SnapshotError, read_manifest


@pytest.mark.parametrize("kind", list(IndexKind))
def test_snapshot_round_trip_gives_identical_results(tmp_path, face_format, realistic_set, kind):
    data = realistic_set
    index = GalleryIndex(face_format, IndexPolicy(forced_kind=kind))
    index.add(data.gallery_ids[:6000], data.gallery[:6000])
    path = tmp_path / "gallery.snapshot"
    index.save(path, change_seq=41)

    manifest = read_manifest(path)
    assert manifest["change_seq"] == 41
    assert manifest["template_count"] == 6000 and manifest["record_count"] == 3000
    assert manifest["kind"] == kind.value
    assert manifest["template_format"]["dimension"] == 512

    loaded = GalleryIndex.load(path)
    assert loaded.kind is kind and loaded.template_count == 6000
    before = index.search(data.mated_probes, k=5)
    after = loaded.search(data.mated_probes, k=5)
    np.testing.assert_array_equal(before.record_ids, after.record_ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    loaded.add([10**6], data.nonmated_probes[:1])  # a loaded index is a live index
    assert loaded.search(data.nonmated_probes[:1], k=1).record_ids[0, 0] == 10**6


def test_snapshot_is_replaced_atomically_leaving_no_temporary(tmp_path, face_format, rng):
    index = GalleryIndex(face_format)
    index.add([1], rng.standard_normal((1, 512)))
    path = tmp_path / "g.snapshot"
    index.save(path, change_seq=1)
    index.add([2], rng.standard_normal((1, 512)))
    index.save(path, change_seq=2)
    assert [p.name for p in tmp_path.iterdir()] == ["g.snapshot"]
    assert read_manifest(path)["change_seq"] == 2


def _snapshot(tmp_path, face_format, rng):
    index = GalleryIndex(face_format)
    index.add(np.arange(100), rng.standard_normal((100, 512)))
    path = tmp_path / "g.snapshot"
    index.save(path, change_seq=5)
    return path


def test_corrupt_payload_is_refused(tmp_path, face_format, rng):
    path = _snapshot(tmp_path, face_format, rng)
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0x01
    path.write_bytes(bytes(raw))
    read_manifest(path)  # the manifest itself is intact
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        GalleryIndex.load(path)


def test_truncated_snapshot_is_refused(tmp_path, face_format, rng):
    path = _snapshot(tmp_path, face_format, rng)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SnapshotError, match="truncated"):
        GalleryIndex.load(path)


def test_corrupt_manifest_and_foreign_files_are_refused(tmp_path, face_format, rng):
    path = _snapshot(tmp_path, face_format, rng)
    raw = bytearray(path.read_bytes())
    raw[-60] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError):
        GalleryIndex.load(path)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"not a snapshot at all" * 10)
    with pytest.raises(SnapshotError, match="not a readmit snapshot"):
        read_manifest(foreign)
    with pytest.raises(SnapshotError, match="cannot open"):
        GalleryIndex.load(tmp_path / "missing")


def test_empty_gallery_round_trips(tmp_path, face_format):
    path = tmp_path / "empty.snapshot"
    GalleryIndex(face_format).save(path, change_seq=0)
    loaded = GalleryIndex.load(path)
    assert loaded.template_count == 0
    assert (loaded.search(np.ones((1, 512)), k=2).record_ids == -1).all()
