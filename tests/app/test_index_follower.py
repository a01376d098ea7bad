"""One ordering rule for this process's changes and other processes': under a gallery's write
lock, change n is applied after n - 1 and never twice, whoever applies it first (the writer that
committed it, a writer catching up, or the follower). A real registry and FAISS index, fed by a
change log held in memory."""

import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from app.indexes.changes import LoggedChange, check_contiguous
from app.indexes.exceptions import ChangeLogGap
from app.indexes.follower import Follower
from app.indexes.registry import IndexChange, IndexRegistry
from matcher import IndexPolicy, Metric, TemplateFormat

FORMAT = TemplateFormat("test", 8, Metric.COSINE)
GALLERY = 1


class MemoryDatabase:
    """A change log and the records' current templates, as other processes left them."""

    def __init__(self) -> None:
        self.log: dict[int, list[LoggedChange]] = {GALLERY: []}
        self.templates: dict[int, np.ndarray] = {}
        self.rng = np.random.default_rng(0)

    def commit(self, upserted=(), removed=()) -> tuple[int, IndexChange]:
        """Another process's (or this one's) committed change; returns its number and the change
        as its writer would apply it."""
        for record_id in upserted:
            self.templates[record_id] = self.rng.standard_normal((2, FORMAT.dimension)).astype(np.float32)
        for record_id in removed:
            self.templates.pop(record_id, None)
        seq = len(self.log[GALLERY]) + 1
        upserted_ids, removed_ids = np.asarray(upserted, np.int64), np.asarray(removed, np.int64)
        self.log[GALLERY].append(LoggedChange(seq, datetime.now(UTC), upserted_ids, removed_ids))
        record_ids, templates = self.current_templates(GALLERY, FORMAT.dimension, upserted_ids)
        return seq, IndexChange(list(removed), record_ids, templates if len(record_ids) else None)

    def seqs(self) -> dict[int, int]:
        return {gallery_id: len(changes) for gallery_id, changes in self.log.items()}

    def changes_after(self, gallery_id, after_seq, upto_seq):
        changes = [
            c
            for c in self.log[gallery_id]
            if c.change_seq > after_seq and (upto_seq is None or c.change_seq <= upto_seq)
        ]
        check_contiguous(changes, after_seq, upto_seq)
        return changes

    def current_templates(self, gallery_id, dimension, record_ids):
        present = [int(r) for r in record_ids if int(r) in self.templates]
        if not present:
            return np.empty(0, np.int64), np.empty((0, dimension), np.float32)
        return np.repeat(present, 2), np.concatenate([self.templates[r] for r in present])


@pytest.fixture
def database():
    return MemoryDatabase()


@pytest.fixture
def registry(tmp_path, database):
    registry = IndexRegistry(tmp_path, IndexPolicy(), database)
    registry.create_empty(GALLERY, FORMAT)
    return registry


@pytest.fixture
def applied(registry):
    """The change numbers the gallery's index is given, in order."""
    index = registry.get(GALLERY)
    seqs: list[int] = []
    apply = index.apply

    def recording(change_seq, *args):
        seqs.append(change_seq)
        apply(change_seq, *args)

    index.apply = recording
    return seqs


def follower(registry, database, opened=None):
    return Follower(registry, database, opened or (lambda gallery_id: None), lambda gallery_id: None, None, 60)


def records_in(registry) -> set[int]:
    return set(registry.get(GALLERY).record_ids().tolist())


def found(registry, database, record_id) -> bool:
    result = registry.get(GALLERY).search(database.templates[record_id][:1], k=1)
    return int(result.record_ids[0, 0]) == record_id


def test_a_writer_behind_catches_up_on_the_changes_before_its_own(registry, database, applied):
    database.commit(upserted=[1, 2])  # committed by other processes, not seen here yet
    database.commit(upserted=[3], removed=[1])
    seq, change = database.commit(upserted=[4])  # this process's own
    with registry.writing(GALLERY):
        registry.apply(GALLERY, seq, change)
    assert applied == [2, 3], "changes 1 and 2 as one update, then the writer's own"
    assert records_in(registry) == {2, 3, 4}
    assert all(found(registry, database, record_id) for record_id in (2, 3, 4))


def test_the_follower_skips_what_the_writer_applied_and_never_applies_twice(registry, database, applied):
    seq, change = database.commit(upserted=[1])
    with registry.writing(GALLERY):
        registry.apply(GALLERY, seq, change)
    following = follower(registry, database)
    assert following.run_once() == 0
    database.commit(upserted=[2])
    assert following.run_once() == 1
    assert following.run_once() == 0
    seq, change = database.commit(removed=[2])
    with registry.writing(GALLERY):
        registry.apply(GALLERY, seq, change)
    assert following.run_once() == 0
    assert applied == [1, 2, 3]
    assert records_in(registry) == {1}


def test_a_change_whose_records_were_deleted_since_brings_no_templates(registry, database):
    database.commit(upserted=[1, 2])
    database.commit(removed=[2])
    database.commit(upserted=[5])
    with registry.writing(GALLERY):
        registry.catch_up(GALLERY, 1)
    assert records_in(registry) == {1}, "record 2 is read as it is now: gone"
    with registry.writing(GALLERY):
        registry.catch_up(GALLERY, 3)
    assert records_in(registry) == {1, 5}


def test_a_gap_in_the_log_is_refused_not_skipped(registry, database, applied):
    database.commit(upserted=[1])
    database.commit(upserted=[2])
    del database.log[GALLERY][0]  # as for changes made before the log existed
    with registry.writing(GALLERY), pytest.raises(ChangeLogGap):
        registry.catch_up(GALLERY, 2)
    assert applied == []


def test_a_gallery_new_to_this_process_is_opened_by_the_follower(registry, database):
    database.log[7] = []
    opened = []
    follower(registry, database, opened.append).run_once()
    assert opened == [7]


def test_concurrent_writers_and_follower_apply_every_change_once_in_order(registry, database, applied):
    """A writer of this process and other processes commit while the follower runs: every
    number reaches the index once, in increasing order, and the index ends as the database."""
    commit_lock = threading.Lock()  # the database's row lock on the gallery: numbers commit in order
    following = follower(registry, database)
    stop = threading.Event()

    def follow():
        while not stop.is_set():
            following.run_once()

    def write(record_ids):
        for record_id in record_ids:
            with registry.writing(GALLERY):
                with commit_lock:
                    seq, change = database.commit(upserted=[record_id])
                registry.apply(GALLERY, seq, change)

    def other_process(record_ids):
        for record_id in record_ids:
            with commit_lock:
                database.commit(upserted=[record_id], removed=[record_id - 1000])

    threads = [
        threading.Thread(target=follow),
        threading.Thread(target=write, args=(range(0, 100),)),
        threading.Thread(target=other_process, args=(range(1000, 1100),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    following.run_once()
    assert applied == sorted(set(applied)), "increasing, no number twice"
    assert applied[-1] == 200
    assert records_in(registry) == set(database.templates)
    assert all(found(registry, database, record_id) for record_id in database.templates)


def test_a_gallery_this_process_is_creating_is_left_to_it(registry, database):
    database.log[7] = []
    opened = []
    with registry.creating(7):  # committed, its index not given yet
        follower(registry, database, opened.append).run_once()
    assert opened == []
