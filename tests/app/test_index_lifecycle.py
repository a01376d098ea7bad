"""Indexes are caches of the database: loaded from a current snapshot, rebuilt otherwise."""

import numpy as np
import pytest
from sqlalchemy import delete

from app.db.session import transaction
from app.galleries.models import GalleryChange
from tests.harness import Service, records


@pytest.fixture
def populated(service):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    batch = records(20)
    service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry)
    return service, gallery_id, registry, batch


def top_score(service, gallery_id, template):
    return float(service.runtime.registry.get(gallery_id).search(np.asarray([template]), k=1).scores[0, 0])


def test_a_graceful_restart_loads_the_snapshot(populated):
    service, gallery_id, _, batch = populated
    service.restart()
    assert service.runtime.registry.load_events == [
        {"gallery_id": gallery_id, "source": "snapshot", "templates": 40, "kind": "exact"}
    ]
    assert top_score(service, gallery_id, batch[7]["templates"][0]) == pytest.approx(1.0, abs=1e-5)


def test_a_crash_after_changes_leaves_a_snapshot_behind_that_the_change_log_catches_up(populated):
    service, gallery_id, registry, batch = populated
    service.runtime.registry.snapshot(gallery_id)
    service.client.delete(f"/v1/galleries/{gallery_id}/records/REF-00003", headers=registry)
    replaced = {**batch[5], "templates": records(1, seed=9)[0]["templates"]}
    service.client.post(f"/v1/galleries/{gallery_id}/records:batch", json={"records": [replaced]}, headers=registry)
    service.restart(graceful=False)
    (event,) = service.runtime.registry.load_events
    assert event["source"] == "caught up: changes 2 to 3 from the log" and event["templates"] == 38
    assert top_score(service, gallery_id, batch[3]["templates"][0]) < 0.9
    assert top_score(service, gallery_id, batch[5]["templates"][0]) < 0.9
    assert top_score(service, gallery_id, replaced["templates"][1]) == pytest.approx(1.0, abs=1e-5)


def test_a_snapshot_behind_changes_the_log_does_not_hold_is_rebuilt(populated):
    service, gallery_id, registry, batch = populated
    service.runtime.registry.snapshot(gallery_id)
    service.client.delete(f"/v1/galleries/{gallery_id}/records/REF-00003", headers=registry)
    with service.runtime.sessions.begin() as session:  # as for changes made before the log existed
        session.execute(delete(GalleryChange).where(GalleryChange.gallery_id == gallery_id))
    service.restart(graceful=False)
    (event,) = service.runtime.registry.load_events
    assert event["source"] == "rebuilt: stale snapshot (seq 1 vs 2), not covered by the change log"
    assert event["templates"] == 38
    assert top_score(service, gallery_id, batch[3]["templates"][0]) < 0.9


def test_a_corrupt_snapshot_is_rebuilt_from_the_database(populated):
    service, gallery_id, _, batch = populated
    service.restart()
    path = service.runtime.registry.snapshot_path(gallery_id)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    service.restart(graceful=False)
    (event,) = service.runtime.registry.load_events
    assert event["source"].startswith("rebuilt: corrupt snapshot")
    assert top_score(service, gallery_id, batch[11]["templates"][1]) == pytest.approx(1.0, abs=1e-5)
    service.restart(graceful=False)
    assert service.runtime.registry.load_events[0]["source"] == "snapshot", "the rebuild wrote a fresh snapshot"


def test_a_missing_snapshot_is_rebuilt(populated):
    service, gallery_id, _, _ = populated
    service.restart()
    service.runtime.registry.snapshot_path(gallery_id).unlink()
    service.restart(graceful=False)
    assert service.runtime.registry.load_events[0]["source"] == "rebuilt: no snapshot"
    assert service.runtime.registry.get(gallery_id).template_count == 40


def test_index_settings_reach_every_gallery(tmp_path):
    service = Service(tmp_path / "data", None, exact_max_templates=10, shortlist_length=7)
    try:
        gallery_id = service.gallery("SEN")
        registry = service.principal("registry", "SEN")
        batch = records(20)
        stored = service.client.post(
            f"/v1/galleries/{gallery_id}/records:batch", json={"records": batch}, headers=registry
        )
        assert stored.status_code in (200, 201), stored.text
        index = service.runtime.registry.get(gallery_id)
        assert index.kind.value == "pq_fastscan"  # past READMIT_EXACT_MAX_TEMPLATES
        assert index.policy.shortlist_length == 7  # READMIT_SHORTLIST_LENGTH
    finally:
        service.close()


def test_what_a_start_allocated_is_frozen_out_of_collections_until_its_stop(tmp_path):
    """A full collection stops every thread: the start's long-lived objects are frozen once the
    indexes are open, and handed back to the collector when the runtime stops."""
    import gc

    service = Service(tmp_path / "data", None)
    try:
        assert service.runtime.ready
        assert gc.get_freeze_count() > 0
    finally:
        service.close()
    assert gc.get_freeze_count() == 0


def test_a_gallery_streamed_into_an_index_leaves_the_writers_free(populated):
    """An index's load reads every template of its gallery, for seconds or minutes: through a
    writing session it held SQLite's writers' turn meanwhile, and every write of the service
    waited (with Ray, a shard restored during a rebuild waited for it as well, for ever)."""
    service, gallery_id, _, _ = populated
    runtime = service.runtime
    stream = runtime.stream_templates(gallery_id, runtime.gallery_source(gallery_id).template_format.dimension)
    first_ids, _ = next(stream)  # mid-load: the reading session is open
    assert first_ids.size > 0
    with transaction(runtime.sessions) as session:  # a write meanwhile, from this very thread
        session.execute(delete(GalleryChange).where(GalleryChange.gallery_id == -1))
    stream.close()
