import numpy as np

from matcher import GalleryIndex, IndexKind, IndexPolicy, prepare_templates
from matcher.evaluation import mate_ranks, rank_k_identification_rate
from matcher.shortlist import ShortlistIndex


def test_gallery_switches_to_pq_fastscan_past_the_threshold_and_keeps_every_mate(face_format, realistic_set):
    data = realistic_set
    index = GalleryIndex(face_format, IndexPolicy(exact_max_templates=10_000))
    index.add(data.gallery_ids, data.gallery)
    assert index.kind is IndexKind.PQ_FASTSCAN

    exact = GalleryIndex(face_format, IndexPolicy(forced_kind=IndexKind.EXACT))
    exact.add(data.gallery_ids, data.gallery)

    approx_result = index.search(data.mated_probes, k=10)
    exact_result = exact.search(data.mated_probes, k=10)
    approx_rate = rank_k_identification_rate(mate_ranks(approx_result.record_ids, data.mated_ids), 1)
    exact_rate = rank_k_identification_rate(mate_ranks(exact_result.record_ids, data.mated_ids), 1)
    # Stated bound: on 20k realistic identities the shortlist loses no mate that exact search finds.
    assert approx_rate >= exact_rate - 0.0025
    assert exact_rate > 0.99
    # Scores are exact scores (re-ranked from float32), not compressed-code estimates.
    top = approx_result.record_ids[:, 0] == exact_result.record_ids[:, 0]
    np.testing.assert_allclose(approx_result.scores[top, 0], exact_result.scores[top, 0], rtol=1e-5)


def test_forced_kind_and_automatic_switch_back(face_format, realistic_set):
    data = realistic_set
    index = GalleryIndex(face_format, IndexPolicy(exact_max_templates=30_000))
    index.add(data.gallery_ids[:20_000], data.gallery[:20_000])
    assert index.kind is IndexKind.EXACT
    index.add(data.gallery_ids[20_000:], data.gallery[20_000:])
    assert index.kind is IndexKind.PQ_FASTSCAN
    index.remove(np.arange(4_000, 20_000))  # 8k templates left, below half the threshold
    assert index.kind is IndexKind.EXACT
    index.rebuild(IndexKind.PQ_FASTSCAN)
    assert index.kind is IndexKind.PQ_FASTSCAN
    result = index.search(data.mated_probes, k=1)
    kept = data.mated_ids < 4_000
    assert (result.record_ids[kept, 0] == data.mated_ids[kept]).mean() > 0.99
    assert not np.isin(np.arange(4_000, 20_000), result.record_ids).any()


def test_delete_in_approximate_mode_removes_from_results(face_format, realistic_set):
    data = realistic_set
    index = GalleryIndex(face_format, IndexPolicy(forced_kind=IndexKind.PQ_FASTSCAN))
    index.add(data.gallery_ids, data.gallery)
    gone = data.mated_ids[:50]
    index.remove(gone)
    result = index.search(data.mated_probes[:50], k=20)
    assert not np.isin(gone, result.record_ids).any()
    remaining = index.search(data.mated_probes[50:], k=1)
    assert (remaining.record_ids[:, 0] == data.mated_ids[50:]).mean() > 0.99


def test_codes_stay_aligned_through_removals_appends_and_snapshots(tmp_path, face_format, realistic_set):
    """Removing rows and appending new ones must keep every code aligned with its float32 row
    (else exact re-ranking would score the wrong templates and mates would vanish)."""
    data = realistic_set
    policy = IndexPolicy(forced_kind=IndexKind.PQ_FASTSCAN)
    index = GalleryIndex(face_format, policy)
    index.add(data.gallery_ids[:20_000], data.gallery[:20_000])
    removed = np.arange(0, 10_000, 7)  # records spread over the whole index
    index.remove(removed)
    for start in range(20_000, 40_000, 2_500):  # enrolment in batches
        index.add(data.gallery_ids[start : start + 2_500], data.gallery[start : start + 2_500])
    kept = ~np.isin(data.mated_ids, removed)
    result = index.search(data.mated_probes, k=1)
    assert (result.record_ids[kept, 0] == data.mated_ids[kept]).mean() > 0.99
    assert not np.isin(removed, result.record_ids).any()
    path = tmp_path / "aligned.snapshot"
    index.save(path, change_seq=3)
    loaded = GalleryIndex.load(path, policy)
    np.testing.assert_array_equal(
        loaded.search(data.mated_probes, k=3).record_ids, index.search(data.mated_probes, k=3).record_ids
    )
    one_by_one = np.array([index.search(probe[None, :], k=1).record_ids[0, 0] for probe in data.mated_probes])
    assert (one_by_one[kept] == data.mated_ids[kept]).mean() > 0.99  # single probes: the parallel scan


def test_partitions_proposing_their_share_keep_the_one_index_shortlist(face_format, realistic_set):
    """Each partition proposes its share of the shortlist, scanned and re-scored on its own
    thread for a single probe; what they propose together holds the best of what one index of
    the same codes proposes, with the same exact scores."""
    vectors = prepare_templates(realistic_set.gallery, face_format)
    labels = np.arange(len(vectors), dtype=np.int64)

    def rescore(probes, rows):
        return np.where(rows >= 0, labels[rows], -1), np.where(
            rows >= 0, (probes[:, None, :] * vectors[rows]).sum(-1), -np.inf
        )

    one = ShortlistIndex.build(face_format, vectors, 65_536, partitions=1)
    three = ShortlistIndex.build(face_format, vectors, 65_536, partitions=3)
    sizes = [part.ntotal for part in three.parts]
    assert sum(sizes) == len(vectors) and max(sizes) - min(sizes) <= 1
    for probes in (realistic_set.mated_probes[:1], realistic_set.mated_probes[:40]):
        probes = prepare_templates(probes, face_format)
        alone_ids, alone_scores = one.search(probes, 200, rescore)
        ids, scores = three.search(probes, 200, rescore)
        assert ids.shape == (len(probes), 3 * 67)  # each partition's share, rounded up
        for query in range(len(probes)):
            assert set(alone_ids[query, :100]) <= set(ids[query])  # proposals come best estimate first
            proposed = dict(zip(ids[query], scores[query], strict=True))
            assert all(
                proposed[i] == s for i, s in zip(alone_ids[query], alone_scores[query], strict=True) if i in proposed
            )
