import numpy as np
import pytest

from matcher import GalleryIndex, IndexKind, Metric, TemplateFormat


def brute_force_per_record(gallery, labels, probes, k, metric):
    if metric is Metric.L2:
        scores = -((probes[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2)
    else:
        scores = probes @ gallery.T
    ids, best = [], []
    for row in scores:
        per_record = {}
        for label, score in zip(labels, row, strict=True):
            per_record[label] = max(per_record.get(label, -np.inf), score)
        ranked = sorted(per_record.items(), key=lambda item: (-item[1], item[0]))[:k]
        ids.append([r for r, _ in ranked])
        best.append([s for _, s in ranked])
    return np.array(ids), np.array(best)


@pytest.mark.parametrize("metric", list(Metric))
def test_exact_search_equals_numpy_brute_force(rng, metric):
    fmt = TemplateFormat("m", 32, metric)
    gallery = rng.standard_normal((600, 32)).astype(np.float32)
    labels = rng.integers(0, 250, 600)  # several samples per record, uneven
    probes = rng.standard_normal((25, 32)).astype(np.float32)
    index = GalleryIndex(fmt)
    index.add(labels, gallery)
    result = index.search(probes, k=10)

    if metric is Metric.COSINE:
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        probes = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    expected_ids, expected_scores = brute_force_per_record(gallery, labels, probes, 10, metric)
    assert index.kind is IndexKind.EXACT
    np.testing.assert_allclose(result.scores, expected_scores, rtol=1e-4, atol=1e-3)
    # ids agree wherever scores are not tied within float32 noise
    agree = result.record_ids == expected_ids
    assert agree.mean() > 0.98


def test_per_record_fusion_takes_best_over_probe_and_record_samples(face_format):
    rng = np.random.default_rng(3)
    person = rng.standard_normal(512).astype(np.float32)
    other = rng.standard_normal((3, 512)).astype(np.float32)
    near = person + 0.3 * rng.standard_normal(512).astype(np.float32)
    far = person + 3.0 * rng.standard_normal(512).astype(np.float32)
    index = GalleryIndex(face_format)
    index.add([7, 7, 1, 2, 3], np.vstack([far, near, other]))
    probes = np.vstack([rng.standard_normal(512).astype(np.float32), person])  # one poor, one good sample
    result = index.search(probes, k=5, probe_groups=[0, 0])

    assert result.record_ids.shape == (1, 5)
    ids = result.record_ids[0]
    assert ids[0] == 7
    assert list(ids).count(7) == 1, "a record appears once, however many samples it has"
    best = float(near @ person / np.linalg.norm(near) / np.linalg.norm(person))
    assert result.scores[0, 0] == pytest.approx(best, abs=1e-5)
    assert ids[4] == -1 and result.scores[0, 4] == -np.inf, "only 4 records exist: the rest is padding"


def test_k_larger_than_gallery_pads(face_format, rng):
    index = GalleryIndex(face_format)
    index.add([1, 2], rng.standard_normal((2, 512)))
    result = index.search(rng.standard_normal((3, 512)), k=4)
    assert (result.record_ids[:, 2:] == -1).all()
    assert len(result.candidates(0)) == 2


def test_empty_gallery_returns_no_candidates(face_format, rng):
    result = GalleryIndex(face_format).search(rng.standard_normal((2, 512)), k=3)
    assert (result.record_ids == -1).all()


def test_remove_really_removes_the_record(face_format, rng):
    templates = rng.standard_normal((50, 512)).astype(np.float32)
    index = GalleryIndex(face_format)
    index.add(np.arange(50) // 2, templates)
    assert index.remove([4, 5]) == 4
    result = index.search(templates[8:12], k=25)
    assert not np.isin([4, 5], result.record_ids).any()
    assert index.record_count == 23 and index.template_count == 46


def test_replace_swaps_a_records_samples_atomically(face_format, rng):
    old, new = rng.standard_normal((2, 512)), rng.standard_normal((1, 512))
    index = GalleryIndex(face_format)
    index.add([9, 9], old)
    index.add([1], rng.standard_normal((1, 512)))
    index.replace([9], new)
    assert index.template_count == 2
    assert index.search(new, k=1).record_ids[0, 0] == 9
    assert index.score_record(9, old[0]) < 0.3


def test_verification_scores_one_record(face_format, rng):
    template = rng.standard_normal((1, 512))
    index = GalleryIndex(face_format)
    index.add([5], template)
    assert index.score_record(5, template) == pytest.approx(1.0, abs=1e-5)
    assert index.score_record(6, template) is None


def test_fast_ranking_path_equals_general_fusion(rng):
    from matcher.fusion import fuse_per_record

    labels = np.stack([rng.permutation(50)[:20] for _ in range(6)])
    labels[2, 15:] = -1  # short rows are padded
    scores = rng.standard_normal((6, 20)).astype(np.float32)
    scores[2, 15:] = -np.inf
    scores[4, 3] = scores[4, 7]  # a tie, broken by record id on both paths
    groups = np.arange(6)
    fast = fuse_per_record(labels, scores, groups, 6, 25, unique_labels=True)
    general = fuse_per_record(labels, scores, groups, 6, 25)
    np.testing.assert_array_equal(fast.record_ids, general.record_ids)
    np.testing.assert_array_equal(fast.scores, general.scores)
