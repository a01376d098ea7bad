"""The Ray backend: a gallery over shard actors answers exactly as one in-process index, writes
go to one shard, and a killed shard comes back with the same answers.

Slow (a local Ray instance and its worker processes): ``pytest -m slow`` runs these alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from matcher import GalleryIndex, IndexPolicy, ShardUnavailableError, SnapshotError, TemplateFormat  # noqa: E402
from matcher.placement import shard_of  # noqa: E402
from matcher.sharded import ShardedGallery, ShardingPolicy, connect  # noqa: E402

pytestmark = pytest.mark.slow

FORMAT = TemplateFormat("synthetic", 64)
SHARDS = ShardingPolicy(shard_count=3, cpus_per_shard=0.25, search_timeout_s=20, recovery_timeout_s=60)
GALLERY = 11


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    connect("local", num_cpus=2)
    yield
    ray.shutdown()


def enrolment(seed: int, records: int, first_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Records of one to three samples each, as (record id per template, templates)."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(1, 4, records)
    ids = np.repeat(np.arange(first_id, first_id + records), samples)
    return ids, rng.standard_normal((ids.size, FORMAT.dimension)).astype(np.float32)


@pytest.fixture
def pair(local_ray: None, tmp_path: Path) -> Iterator[tuple[GalleryIndex, ShardedGallery]]:
    """The same 600 records in one in-process index and over three shards, snapshotted at 5."""
    ids, templates = enrolment(1, 600)
    local = GalleryIndex(FORMAT, IndexPolicy())
    local.add(ids, templates)
    sharded = ShardedGallery(
        GALLERY, FORMAT, IndexPolicy(), SHARDS, tmp_path / "gallery.snapshot", refill=lambda: [(ids, templates)]
    )
    sharded.add(ids, templates)
    sharded.save(tmp_path / "gallery.snapshot", 5)
    yield local, sharded
    sharded.close()


def assert_same_answers(local: GalleryIndex, sharded: ShardedGallery, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    probes = rng.standard_normal((12, FORMAT.dimension)).astype(np.float32)
    groups = np.repeat(np.arange(6), 2)  # six people, two probe samples each
    for k in (1, 5, 40):
        for probe_groups in (None, groups):
            expected = local.search(probes, k, probe_groups)
            got = sharded.search(probes, k, probe_groups)
            assert np.array_equal(got.record_ids, expected.record_ids)
            assert np.array_equal(got.scores, expected.scores)  # to the bit
            assert got.missing_shards == ()


def wait_until_available(sharded: ShardedGallery, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not all(state.available for state in sharded.health()):
        assert time.monotonic() < deadline, "the shard did not come back"
        time.sleep(0.2)


def kill_shard(sharded: ShardedGallery, shard: int) -> None:
    name = sharded.health()[shard].name
    ray.kill(ray.get_actor(name, namespace="readmit"), no_restart=False)


def test_same_ids_scores_and_order_as_the_in_process_index(pair: tuple[GalleryIndex, ShardedGallery]) -> None:
    local, sharded = pair
    assert sharded.template_count == local.template_count
    assert sharded.record_count == local.record_count
    assert_same_answers(local, sharded)
    probe = np.random.default_rng(3).standard_normal((2, FORMAT.dimension)).astype(np.float32)
    for record_id in (1, 77, 600, 601):
        assert sharded.score_record(record_id, probe) == local.score_record(record_id, probe)


def test_a_write_goes_to_the_one_shard_of_its_record(pair: tuple[GalleryIndex, ShardedGallery]) -> None:
    local, sharded = pair
    new_ids, new_templates = enrolment(2, 50, first_id=1000)
    removed = np.arange(1, 600, 7)
    for index in (local, sharded):
        index.apply(6, removed, new_ids, new_templates)
    template_ids = np.concatenate([enrolment(1, 600)[0], new_ids])
    remaining = template_ids[~np.isin(template_ids, removed)]
    per_shard = np.bincount(shard_of(remaining, SHARDS.shard_count, GALLERY), minlength=SHARDS.shard_count)
    assert [state.templates for state in sharded.health()] == per_shard.tolist()
    assert np.array_equal(sharded.record_ids(), local.record_ids())
    assert_same_answers(local, sharded)


def test_killed_shard_restores_from_snapshot_and_journal(pair: tuple[GalleryIndex, ShardedGallery]) -> None:
    local, sharded = pair
    new_ids, new_templates = enrolment(3, 30, first_id=2000)
    for index in (local, sharded):  # after the snapshot at 5: only in the coordinator's journal
        index.apply(6, np.array([2, 3, 5, 8]), new_ids, new_templates)
    kill_shard(sharded, 1)
    with pytest.raises(ShardUnavailableError) as error:
        for _ in range(100):  # until the coordinator sees the restart
            sharded.search(new_templates[:1], 5)
            time.sleep(0.05)
    assert error.value.code == "shard_unavailable" and error.value.shards == [1]
    partial = sharded.search(new_templates[:1], 5, allow_partial=True)
    assert 1 in partial.missing_shards or partial.missing_shards == ()  # restored already, or named
    wait_until_available(sharded)
    assert_same_answers(local, sharded)


def test_killed_shard_without_snapshot_is_refilled_from_the_source(local_ray: None, tmp_path: Path) -> None:
    ids, templates = enrolment(4, 300)
    local = GalleryIndex(FORMAT, IndexPolicy())
    local.add(ids, templates)
    sharded = ShardedGallery(
        GALLERY, FORMAT, IndexPolicy(), SHARDS, tmp_path / "g.snapshot", lambda: [(ids, templates)]
    )
    try:
        sharded.add(ids, templates)  # never snapshotted
        kill_shard(sharded, 0)
        time.sleep(1)
        with pytest.raises(ShardUnavailableError):
            sharded.search(templates[:2], 3)
        wait_until_available(sharded)
        assert_same_answers(local, sharded)
    finally:
        sharded.close()


def test_shards_reload_their_snapshots(pair: tuple[GalleryIndex, ShardedGallery], tmp_path: Path) -> None:
    local, sharded = pair
    path = tmp_path / "gallery.snapshot"
    sharded.close()
    reloaded = ShardedGallery(GALLERY, FORMAT, IndexPolicy(), SHARDS, path, refill=None, fresh=False)
    try:
        assert reloaded.change_seq == 5
        assert_same_answers(local, reloaded)
    finally:
        reloaded.close()
    reloaded.shard_path(2).unlink()
    with pytest.raises(SnapshotError):
        ShardedGallery(GALLERY, FORMAT, IndexPolicy(), SHARDS, path, refill=None, fresh=False)


def test_calibration_samples_come_from_every_shard(pair: tuple[GalleryIndex, ShardedGallery]) -> None:
    _, sharded = pair
    top = sharded.nonmated_top_scores(200)
    pairs = sharded.nonmated_pair_scores(3000)
    assert top.size == 200 and np.isfinite(top).all()
    assert 2900 < pairs.size <= 3000 and abs(float(pairs.mean())) < 0.05


def test_a_write_reaching_a_restarted_shard_first_loses_nothing(pair: tuple[GalleryIndex, ShardedGallery]) -> None:
    """The restarted shard holds its snapshot (change 5); change 6 is only in the journal. A
    write of change 7 reaching it before any search must not pass for change 7 on data that
    lacks change 6: the shard refuses it and is restored with both."""
    local, sharded = pair
    six_ids, six = enrolment(5, 20, first_id=3000)
    seven_ids, seven = enrolment(6, 20, first_id=4000)
    assert (shard_of(seven_ids, SHARDS.shard_count, GALLERY) == 0).any()  # change 7 writes to shard 0
    for index in (local, sharded):
        index.apply(6, np.array([10, 11]), six_ids, six)
    name = sharded.health()[0].name
    kill_shard(sharded, 0)
    handle = ray.get_actor(name, namespace="readmit")
    deadline = time.monotonic() + 60
    while True:  # until Ray has brought the actor back, without the coordinator asking
        try:
            ray.get(handle.state.remote(), timeout=5)
            break
        except ray.exceptions.RayError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    for index in (local, sharded):
        index.apply(7, np.array([12]), seven_ids, seven)
    wait_until_available(sharded)
    assert np.array_equal(sharded.record_ids(), local.record_ids())
    assert_same_answers(local, sharded)


def test_joining_ray_leaves_the_process_its_own_sigterm_handler():
    """``ray.init`` replaces the main thread's SIGTERM handler with one that exits on the spot;
    the service's (uvicorn's: stop, write the final snapshots) must survive it. In a process of
    its own: this module's Ray is already joined."""
    program = (
        "import signal\n"
        "import ray\n"
        "from matcher.sharded import connect\n"
        "def own(*_): pass\n"
        "signal.signal(signal.SIGTERM, own)\n"
        "connect('local', num_cpus=1)\n"
        "print(signal.getsignal(signal.SIGTERM) is own)\n"
        "ray.shutdown()\n"
    )
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "True", run.stderr[-2000:]
