import threading

import numpy as np

from matcher import GalleryIndex, IndexKind, IndexPolicy


def test_searches_stay_correct_while_a_writer_adds_and_removes(face_format, realistic_set):
    """Readers always find the stable records at rank 1 and never see a half-applied write:
    a churning record is either wholly present (both samples) or absent."""
    data = realistic_set
    index = GalleryIndex(face_format, IndexPolicy(forced_kind=IndexKind.PQ_FASTSCAN))
    index.add(data.gallery_ids[:10_000], data.gallery[:10_000])
    stable = data.mated_ids < 5_000
    probes, mates = data.mated_probes[stable], data.mated_ids[stable]
    churn_ids = np.arange(100_000, 100_050)
    churn = np.repeat(data.nonmated_probes[:50], 2, axis=0)
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            index.add(np.repeat(churn_ids, 2), churn)
            index.remove(churn_ids)

    def reader() -> None:
        for _ in range(30):
            result = index.search(probes, k=3)
            if not (result.record_ids[:, 0] == mates).all():
                errors.append("a stable mate was lost during a write")
            churned = index.search(data.nonmated_probes[:50], k=1).record_ids[:, 0]
            present = np.isin(churned, churn_ids)
            if present.any() and not present.all():
                errors.append("a reader saw a partly applied add")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    assert errors == []
    assert index.template_count == 10_000
