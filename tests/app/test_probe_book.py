"""The case linker's book of stored probes, without a database: what it compares a new search
with (every live stored probe of other cases, whatever was appended, erased and compacted), and
which searches it counts as settled."""

import numpy as np

from app.cases.links import INITIAL_ROWS, ProbeBook, _Group, _Stored
from matcher import Metric, Thresholds

DIM = 16


def unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def brute_force(held: dict[int, tuple[int, np.ndarray]], search_id: int, floor: float) -> dict[int, tuple[float, int]]:
    """Per other case, its best score against the search's probes, by a loop over every search."""
    case_id, probes = held[search_id]
    best: dict[int, tuple[float, int]] = {}
    for other, (other_case, rows) in sorted(held.items()):
        score = float((probes @ rows.T).max())
        if other_case != case_id and score >= floor and (other_case not in best or score > best[other_case][0]):
            best[other_case] = (score, other)
    return best


def assert_same(found: list[dict[int, tuple[float, int]]], expected: list[dict[int, tuple[float, int]]]) -> None:
    """Same cases and searches; scores to float32 rounding (a GEMM sums in another order)."""
    assert [{case: other for case, (_, other) in f.items()} for f in found] == [
        {case: other for case, (_, other) in e.items()} for e in expected
    ]
    for f, e in zip(found, expected, strict=True):
        assert np.allclose([f[case][0] for case in f], [e[case][0] for case in f], atol=1e-5)


def test_a_group_compares_with_every_live_probe_through_growth_erasure_and_compaction():
    rng = np.random.default_rng(3)
    group = _Group.empty(Metric.COSINE, DIM)
    held: dict[int, tuple[int, np.ndarray]] = {}
    for search_id in range(1, 700):  # about 1,400 rows: past the first buffers
        probes = unit_rows(rng, 1 + search_id % 3)
        group.add(search_id, search_id % 50, probes)
        held[search_id] = (search_id % 50, probes)
    assert group.size > INITIAL_ROWS
    for search_id in range(1, 700, 4):
        group.erase(search_id)
        del held[search_id]
    asked = [2, 3, 699, 350]
    floor = 0.3
    before = group.best_other_cases(asked, [floor] * len(asked))
    assert_same(before, [brute_force(held, s, floor) for s in asked])
    assert all(before), "every search has other cases above the floor: the comparison is not empty"
    group.compact()
    assert group.size == sum(len(rows) for _, rows in held.values())
    assert_same(group.best_other_cases(asked, [floor] * len(asked)), before)


def test_a_search_whose_thresholds_are_unknown_is_not_settled():
    rng = np.random.default_rng(4)
    book = ProbeBook()
    key = ("FRA", "FRA-DCPAF", "m", DIM, "cosine")
    group = book._groups[key] = _Group.empty(Metric.COSINE, DIM)
    same_person = unit_rows(rng, 1)
    for search_id, case_id, gallery_id in ((1, 10, 7), (2, 20, 7), (3, 30, 8)):
        group.add(search_id, case_id, same_person)
        book._held[search_id] = _Stored(search_id, case_id, gallery_id, key)
    thresholds = {7: Thresholds(match=0.9, possible=0.8)}
    settled, found = book.compare([2, 3, 4], thresholds.get)
    assert sorted(settled) == [2, 4], "3's gallery has no thresholds here yet; 4 is not linkable"
    assert {(link.search_id, link.other_case_id) for link in found} == {(2, 10), (2, 30)}
