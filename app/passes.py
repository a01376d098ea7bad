"""The service's background passes: the audit log's sequencer (chain, Merkle tree, signed
checkpoints) and the case linker, which run beside the requests, never on their path.

By default (``READMIT_BACKGROUND_PROCESS``) each serving process runs them in a child process of
its own rather than in its threads. In the serving interpreter they held its lock a sixth of the
time at 32 clients (py-spy ``--gil``: sequencer 8.9%, linker 6.9%), while the matcher's thread
queued for that lock between its FAISS calls, and each pass delayed the requests in flight: the
one-client p99 above all (README: "Where an identification's time goes"). The child shares only
the database, the key files and the metrics folder with its parent. It reads its parent's end of
a pipe: a byte wakes the linker after each batch of searches, and the end of the pipe (its
parent stopped or killed) stops it. A child that dies is started again by its parent; nothing
is lost meanwhile, since both passes take their work from the database (events committed and
not sequenced, searches ended and not compared).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO

from prometheus_client import Counter
from pydantic import SecretStr
from sqlalchemy import Engine

from app.audit.keys import load_signing_key
from app.audit.log import CheckpointPolicy
from app.audit.notes import Signer
from app.audit.sequencer import Sequencer
from app.cases.linker import MIN_PASS_S, CaseLinker
from app.cases.links import ThresholdsOf
from app.core.config import Settings
from app.db.locks import Leadership
from app.db.session import Sessions, make_engine, make_session_factory, transaction
from app.encryption.keyring import Keyring
from app.encryption.service import configured_master_key
from app.matching.thresholds import StoredThresholds
from app.observability.metrics import PassesMetrics

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
"""How long a parent waits before it starts a dead child again; doubled, up to
``MAX_RESTART_DELAY_S``, each time the child dies within ``STEADY_S`` of its start (a child that
cannot start, on a database down, is not started in a loop of error lines)."""

MAX_RESTART_DELAY_S = 30.0
STEADY_S = 10.0

STOP_WITHIN_S = 15.0
"""How long a stopping child has to end its passes before it is killed."""

NICENESS = 10
"""The child's scheduling priority, below its parent's: its passes wait for a core the requests
do not need. At the default niceness, with one client, its linker's matrix products took 70% of a
core on both cores' BLAS threads, and the requests waited for theirs (a p99 of 25-45 ms)."""

PIPE_BYTES = 65536
"""The wake-ups a child reads at once: all a pipe can hold.

It reads them no more often than its linker passes (every ``MIN_PASS_S`` at most). Between two
reads no reader waits on the pipe, so the byte a batch writes wakes no process. Read at once,
each byte had the host switch to the child about 250 times a second at one client, on a core
the next search needed. At 1M, one client, in three alternated pairs, the service's CPU per
identification went from 4.20-4.65 ms to 3.92-4.07 ms, and the p50 from 3.55-4.04 ms to
3.26-3.55 ms."""

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Background work takes one core at most: numpy's BLAS (the linker's products) and OpenMP."""


SHARED_LINK_POLL_S = 1.0
"""How often the leading linker looks for searches other processes ended, where several share
the database: only its own serving process wakes it after a batch."""


@dataclass(frozen=True)
class Passes:
    sequencer: Sequencer
    linker: CaseLinker
    leadership: Leadership
    """Whether these passes are the ones that run, among every process of the database."""

    def start(self) -> None:
        self.leadership.start()
        self.sequencer.start()
        self.linker.start()

    def stop(self) -> None:
        self.linker.stop()
        self.sequencer.stop()
        self.leadership.stop()


def make_passes(
    settings: Settings,
    engine: Engine,
    sessions: Sessions,
    read_sessions: Sessions,
    signer: Signer,
    metrics: PassesMetrics,
    thresholds_of: ThresholdsOf,
) -> Passes:
    """The passes as ``settings`` configure them, in the serving process or in its child."""
    checkpoints = CheckpointPolicy(settings.audit_checkpoint_interval_s, settings.audit_checkpoint_events)
    leadership = Leadership(engine, "background-passes", lambda leading: metrics.passes_leading.set(int(leading)))
    link_poll_s = settings.expiry_interval_s
    if settings.shared_database:
        link_poll_s = min(link_poll_s, SHARED_LINK_POLL_S)
    return Passes(
        Sequencer(
            sessions,
            read_sessions,
            signer,
            checkpoints,
            settings.audit_sequence_interval_s,
            metrics,
            leadership.leading,
        ),
        CaseLinker(sessions, read_sessions, thresholds_of, link_poll_s, metrics, leadership.leading),
        leadership,
    )


class PassesProcess:
    """The serving process's side: its child running the passes, started again if it dies."""

    def __init__(self, settings: Settings, restarts: Counter) -> None:
        self.settings, self.restarts = settings, restarts
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # a restart and a stop never interleave
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="passes-watcher", daemon=True)
        self._watcher.start()

    def wake(self) -> None:
        """Have the child's linker look now (searches have just ended). Never blocks: a full
        pipe already holds a wake-up."""
        process = self._process
        if process is None or process.stdin is None or process.stdin.closed:
            return
        with contextlib.suppress(OSError, ValueError):  # full (a wake-up is pending), or the child is gone
            os.write(process.stdin.fileno(), b".")

    def stop(self) -> None:
        """End the child's passes: the pipe closes, it finishes its pass and exits."""
        self._stopping.set()
        with self._lock:
            process = self._process
            if process is None:
                return
            _close(process.stdin)
            try:
                process.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                log.error("background passes process did not stop; killed", extra={"event": {"pid": process.pid}})
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _spawn(self) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app", "passes", "--log-level", level],
            stdin=subprocess.PIPE,
            env={**os.environ, **ONE_THREAD, **settings_environment(self.settings)},
        )
        assert self._process.stdin is not None
        os.set_blocking(self._process.stdin.fileno(), False)
        log.info("background passes process started", extra={"event": {"pid": self._process.pid}})

    def _watch(self) -> None:
        delay_s = RESTART_DELAY_S
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():  # it ended because it was told to: no error, no restart
                return
            delay_s = (
                min(2 * delay_s, MAX_RESTART_DELAY_S) if time.monotonic() - started < STEADY_S else RESTART_DELAY_S
            )
            log.error(
                "background passes process ended; starting it again",
                extra={"event": {"pid": process.pid, "exit_code": code, "in_s": delay_s}},
            )
            if self._stopping.wait(delay_s):
                return
            self.restarts.inc()
            with self._lock:
                if self._stopping.is_set():
                    return
                _close(process.stdin)
                self._spawn()


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None and not pipe.closed:
        with contextlib.suppress(OSError):  # a wake-up left unwritten in a pipe nobody reads
            pipe.close()


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the child reads them back (``READMIT_*``): those of a serving process
    created in code (tests, embedding) are not all in its environment. Secrets are passed as
    themselves (a dump would mask them), to the child's environment only."""
    environment = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool | list | dict):
            text = json.dumps(value)
        else:
            text = str(value)
        environment[f"READMIT_{name.upper()}"] = text
    return environment


class _Stop(Exception):
    """Raised in the child's main thread by SIGTERM, to leave its wait on the pipe."""


def relay_wakeups(pipe: int, wake: Callable[[], None], pause: Callable[[float], None] = time.sleep) -> None:
    """Wake the linker once for all the bytes read at a time, then leave the pipe unread for a
    pass's length (see :data:`PIPE_BYTES`); returns when the parent's end is closed."""
    while os.read(pipe, PIPE_BYTES):
        wake()
        pause(MIN_PASS_S)


def run_child(settings: Settings) -> None:
    """The child's body (``readmit passes``, started by a serving process after its start has
    applied migrations and opened the keyring): the passes, until the pipe from the parent ends
    or SIGTERM. The linker reads a gallery's thresholds from the samples the serving processes
    store (it has no index to draw one from); the keyring opens the probes it compares."""
    os.nice(NICENESS)
    engine = make_engine(settings.sqlalchemy_url)
    read_engine = make_engine(settings.sqlalchemy_url, read_only=True)
    sessions, read_sessions = make_session_factory(engine), make_session_factory(read_engine)
    keyring = Keyring(settings.encrypt_at_rest)
    keyring.install(sessions)
    keyring.install(read_sessions)
    with transaction(sessions) as session:
        keyring.unlock(session, configured_master_key(session, settings))
    metrics = PassesMetrics()
    thresholds = StoredThresholds(read_sessions)
    passes = make_passes(
        settings,
        engine,
        sessions,
        read_sessions,
        load_signing_key(settings.audit_key_path),
        metrics,
        lambda gallery_id: thresholds.for_verification(gallery_id, settings.link_fmr),
    )

    def stop(_signal: int, _frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    passes.start()
    log.info("background passes running", extra={"event": {"parent": os.getppid()}})
    try:
        relay_wakeups(sys.stdin.fileno(), passes.linker.wake)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        passes.stop()
        metrics.close()
        engine.dispose()
        read_engine.dispose()
