"""The service's deduplication worker: one background thread running one job at a time.

Identifications come first. A job's GEMM chunks take the cores for tens of milliseconds each,
and between two of them the worker waits for as long as searches are queued (``busy``), so that
a search waits at most for one chunk; a long job makes way at every chunk and loses nothing,
its checkpoint being per block. The thread is woken when a job is submitted, and otherwise
looks for jobs every ``poll_s`` (a job left by a process that stopped, its lease lapsed).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from app.db.session import Sessions
from app.deduplication import service
from app.deduplication.workflow import deduplicate, read_gallery
from app.observability.metrics import Metrics

log = logging.getLogger(__name__)

YIELD_S = 0.005
"""How often a paused job looks again whether the searches are done."""


class Stopping(Exception):
    """The service stops: the job is left at its last checkpoint, its lease given back."""


class DeduplicationWorker:
    def __init__(
        self,
        sessions: Sessions,
        read_sessions: Sessions,
        busy: Callable[[], bool],
        lease_s: float,
        poll_s: float,
        metrics: Metrics,
    ) -> None:
        self.sessions, self.read_sessions, self.busy = sessions, read_sessions, busy
        self.lease_s, self.poll_s = lease_s, poll_s
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="deduplication", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop at the running job's next chunk and give its lease back."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        service.release(self.sessions, self.owner)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = service.claim_next(self.sessions, self.owner, self.lease_s)
                if job_id is not None:
                    self.run(job_id)
                    continue
            except Exception:
                log.exception("deduplication worker pass failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run(self, job_id: int) -> None:
        """Run a job this worker has claimed to its end, or to the stop."""
        started = time.perf_counter()
        try:
            order = service.job_order(self.sessions, job_id)
            gallery = read_gallery(self.read_sessions, order.gallery_id)  # a long read: not in SQLite's writers' turn
            ledger = service.JobLedger(self.sessions, job_id, self.owner, self.lease_s)
            deduplicate(gallery, order.target_fmr, ledger, pause=self._pause)
            service.finish(self.sessions, job_id, self.owner)
            self.metrics.deduplication_jobs.labels("done").inc()
        except (Stopping, service.LeaseLost) as reason:
            log.info("deduplication job left", extra={"event": {"job_id": job_id, "reason": str(reason)}})
        except Exception as error:
            log.exception("deduplication job failed", extra={"event": {"job_id": job_id}})
            service.fail(self.sessions, job_id, self.owner, f"{type(error).__name__}: {error}")
            self.metrics.deduplication_jobs.labels("failed").inc()
        finally:
            self.metrics.deduplication_seconds.inc(time.perf_counter() - started)

    def _pause(self) -> None:
        while True:
            if self._stop.is_set():
                raise Stopping("the service stops")
            if not self.busy():
                return
            time.sleep(YIELD_S)
