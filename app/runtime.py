"""The service's long-lived parts (settings, database, indexes) and their start and stop.

Start applies migrations, then opens every gallery's index; until that is done ``ready`` is
false and /readyz answers 503. A background thread snapshots changed indexes periodically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from app.galleries import service as galleries
from app.indexes.registry import GallerySource, IndexRegistry
from matcher import IndexPolicy

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: IndexRegistry
    ready: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _snapshotter: threading.Thread | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.sqlalchemy_url)
        registry = IndexRegistry(
            settings.index_dir, IndexPolicy(exact_max_templates=settings.exact_max_templates)
        )
        return cls(settings, engine, make_session_factory(engine), registry)

    def start_indexes(self) -> None:
        """Open every gallery's index (migrations already applied), then report ready."""
        self.open_indexes()
        self.ready = True
        self._snapshotter = threading.Thread(target=self._snapshot_loop, name="snapshotter", daemon=True)
        self._snapshotter.start()

    def stop(self) -> None:
        self._stop.set()
        if self._snapshotter is not None:
            self._snapshotter.join(timeout=5)
        if self.ready:
            self.registry.snapshot_all()
        self.ready = False
        self.engine.dispose()

    def gallery_source(self, gallery_id: int) -> GallerySource:
        with self.sessions() as session:
            gallery = session.get(galleries.Gallery, gallery_id)
            if gallery is None:
                raise KeyError(gallery_id)
            _, template_count = galleries.gallery_counts(session, gallery_id)
            return GallerySource(gallery.id, galleries.template_format(gallery), gallery.change_seq, template_count)

    def stream_templates(self, gallery_id: int, dimension: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self.sessions() as session:
            yield from galleries.iter_gallery_templates(session, gallery_id, dimension)

    def open_indexes(self) -> None:
        with self.sessions() as session:
            ids = [g.id for g in galleries.all_galleries(session)]
        for gallery_id in ids:
            self.registry.open(self.gallery_source(gallery_id), self.stream_templates)

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.settings.snapshot_interval_s):
            try:
                written = self.registry.snapshot_all()
                if written:
                    log.info("snapshots written", extra={"event": {"galleries": written}})
            except Exception:
                log.exception("periodic snapshot failed")
