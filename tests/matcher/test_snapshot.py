import json
import os
import struct

import numpy as np
import pytest
import xxhash

from matcher import GalleryIndex, IndexKind, IndexPolicy, SnapshotError, SnapshotKey, read_manifest, sealing, snapshot
from matcher.snapshot import MAGIC, TRAILER


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


def test_sealed_snapshot_holds_no_template_bytes_and_loads_only_with_its_key(tmp_path, face_format, rng):
    templates = rng.standard_normal((300, 512)).astype(np.float32)
    index = GalleryIndex(face_format)
    index.add(np.arange(300), templates)
    path = tmp_path / "g.snapshot"
    key = SnapshotKey("gallery-1/test", os.urandom(32))
    index.save(path, change_seq=3, key=key)

    index.save(tmp_path / "clear.snapshot", change_seq=3)
    rows = [row.astype("<f4").tobytes()[:64] for row in np.asarray(index._store.vectors())]
    assert all(row in (tmp_path / "clear.snapshot").read_bytes() for row in rows)  # what to look for
    stored = path.read_bytes()
    assert not any(row in stored for row in rows)
    assert read_manifest(path)["encryption"] == {"algorithm": "AES-256-GCM", "key_id": "gallery-1/test"}

    loaded = GalleryIndex.load(path, key=key)
    np.testing.assert_array_equal(loaded.search(templates, k=1).record_ids[:, 0], np.arange(300))
    with pytest.raises(SnapshotError, match="no key"):
        GalleryIndex.load(path)
    with pytest.raises(SnapshotError, match="cannot be decrypted"):
        GalleryIndex.load(path, key=SnapshotKey("gallery-1/test", os.urandom(32)))
    with pytest.raises(SnapshotError, match="not 'gallery-2/test'"):
        GalleryIndex.load(path, key=SnapshotKey("gallery-2/test", key.key))


def test_a_clear_snapshot_is_refused_when_a_key_is_expected(tmp_path, face_format, rng):
    index = GalleryIndex(face_format)
    index.add([1], rng.standard_normal((1, 512)))
    index.save(tmp_path / "g.snapshot", change_seq=1)
    with pytest.raises(SnapshotError, match="in clear"):
        GalleryIndex.load(tmp_path / "g.snapshot", key=SnapshotKey("k", os.urandom(32)))


def test_an_altered_sealed_snapshot_is_refused_even_with_its_checksums_recomputed(tmp_path, face_format, rng):
    index = GalleryIndex(face_format)
    index.add(np.arange(10), rng.standard_normal((10, 512)))
    path = tmp_path / "g.snapshot"
    key = SnapshotKey("k", os.urandom(32))
    index.save(path, change_seq=1, key=key)
    manifest = read_manifest(path)
    offset = manifest["sections"]["templates"]["offset"]
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 1
    # Rewrite the file with a correct payload checksum, as someone who knows the format would.
    payload_end = max(s["offset"] + s["nbytes"] for s in manifest["sections"].values())
    manifest["payload_xxh3_128"] = xxhash.xxh3_128(bytes(data[len(MAGIC) : payload_end])).hexdigest()
    encoded = json.dumps(manifest, sort_keys=True).encode()
    tail = encoded + b"\n" + xxhash.xxh3_128(encoded).hexdigest().encode()
    path.write_bytes(bytes(data[:payload_end]) + tail + struct.pack("<Q", len(tail)) + TRAILER)
    with pytest.raises(SnapshotError, match="cannot be decrypted"):
        GalleryIndex.load(path, key=key)


@pytest.mark.parametrize("sealed", [False, True])
def test_a_section_written_in_parts_reads_back_as_their_concatenation(tmp_path, monkeypatch, rng, sealed):
    # Small chunks, so that the parts straddle chunk boundaries and a sealed section has many
    # chunks, decrypted in parallel.
    monkeypatch.setattr(sealing, "CHUNK", 4096)
    monkeypatch.setattr(snapshot, "CHUNK", 4096)
    parts = [rng.standard_normal((rows, 24)).astype(np.float32) for rows in (0, 5, 100, 43, 0, 64)]
    key = SnapshotKey("k", os.urandom(32)) if sealed else None
    path = tmp_path / "parts.snapshot"
    snapshot.write_snapshot(path, {"what": "parts"}, [("rows", parts), ("one", parts[2])], key)
    with snapshot.SnapshotReader(path, key) as reader:
        rows, one = reader.read("rows"), reader.read("one")
        reader.verify()
    np.testing.assert_array_equal(rows, np.concatenate(parts))
    np.testing.assert_array_equal(one, parts[2])
    assert reader.manifest["sections"]["rows"].get("plain_nbytes", 0) == (212 * 24 * 4 if sealed else 0)
