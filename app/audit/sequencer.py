"""The background thread that sequences committed audit events (chain and Merkle tree) and
signs checkpoints, and the on-demand checkpoint an auditor may ask for.

It runs every ``interval_s`` (first at start, so that a restarted or upgraded service catches
up at once), which bounds how long a committed event waits unsequenced; the wait is observed
per event in ``readmit_audit_sequencing_delay_seconds``, and the events waiting at each look in
``readmit_audit_pending_events``. Every process has one; the one that leads
(app/db/locks.py ``Leadership``) runs the passes, and an auditor's read or request sequences on
demand wherever it is served. The database lets one sequence at a time
(app/audit/sequencing.py), so a hand-over that overlaps loses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.audit import log as audit_log
from app.audit.notes import Signer
from app.db.session import Sessions
from app.observability.metrics import PassesMetrics

logger = logging.getLogger(__name__)


class Sequencer:
    def __init__(
        self,
        sessions: Sessions,
        read_sessions: Sessions,
        signer: Signer,
        policy: audit_log.CheckpointPolicy,
        interval_s: float,
        metrics: PassesMetrics,
        leading: Callable[[], bool],
    ) -> None:
        """``leading``: whether this process runs the passes now (it may change)."""
        self.sessions, self.read_sessions, self.signer, self.policy = sessions, read_sessions, signer, policy
        self.interval_s, self.metrics, self._leading = interval_s, metrics, leading
        self._lock = threading.Lock()  # one pass at a time in this process; the database orders processes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, force: bool = False) -> audit_log.Sequenced:
        if not force:
            seen = audit_log.look(self.read_sessions, self.policy)
            self.metrics.audit_pending.set(seen.pending)
            self.metrics.audit_tree_size.set(seen.size)
            if seen.idle:
                return audit_log.Sequenced(seen.size, [], None)
        with self._lock:
            result = audit_log.sequence(self.sessions, self.signer, self.policy, force)
        for delay in result.delays_s:
            self.metrics.audit_sequencing_delay.observe(delay)
        self.metrics.audit_tree_size.set(result.size)
        if result.signed:
            self.metrics.audit_checkpoints.inc()
        return result

    def checkpoint_now(self) -> audit_log.SignedCheckpoint:
        """Every event committed so far chained and in the tree, under a checkpoint signed now
        if the tree has grown since the last one."""
        self.run_once(force=True)
        return audit_log.latest_checkpoint(self.sessions)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="audit-sequencer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            try:
                if self._leading():
                    self.run_once()
                else:  # the leader's figure; this process's last look would stay up as stale
                    self.metrics.audit_pending.set(0)
            except Exception:
                logger.exception("audit sequencing pass failed")
            if self._stop.wait(self.interval_s):
                return
