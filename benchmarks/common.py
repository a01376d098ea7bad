"""Shared helpers of the benchmark scripts: machine baselines, timing and result printing."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.audit.keys import create_signing_key
from app.core.config import Settings

OUT = Path(__file__).resolve().parent / "out"


def ensure_audit_key(settings: Settings) -> None:
    """The service starts only with the audit log's signing key: a scratch data folder gets one."""
    if not settings.audit_key_path.exists():
        create_signing_key(settings.audit_key_path, "readmit.bench/audit")


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for one run, which also holds the master key the run's services
    generate: encryption at rest is on by default, and the key's default home is the user's own
    configuration folder, where a benchmark must leave nothing."""
    before = os.environ.get("READMIT_MASTER_KEY_FILE")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["READMIT_MASTER_KEY_FILE"] = str(Path(folder) / "master.key")
        try:
            yield Path(folder)
        finally:
            if before is None:
                os.environ.pop("READMIT_MASTER_KEY_FILE", None)
            else:
                os.environ["READMIT_MASTER_KEY_FILE"] = before


def measure_read_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Streaming read bandwidth in bytes/s: the best of several full passes over a large array,
    by two kernels (a reduction and BLAS's dot product of the array with itself, which reads it
    once with every core), so that the floor is not flattered by a slow kernel."""
    data = np.ones(nbytes // 4, dtype=np.float32)
    best = float("inf")
    for kernel in (data.max, lambda: np.dot(data, data)):
        for _ in range(repeats):
            start = time.perf_counter()
            kernel()
            best = min(best, time.perf_counter() - start)
    return nbytes / best


def measure_gemm_rate(size: int = 3072, repeats: int = 5) -> float:
    """float32 matrix-multiply rate in FLOP/s (numpy's BLAS), best of a few."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n== {title}")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


def print_json(figures: dict[str, object]) -> None:
    """The last line of every benchmark: every figure, machine-readable."""
    print(json.dumps(figures, sort_keys=True, default=float))


def out_dir() -> Path:
    OUT.mkdir(exist_ok=True)
    return OUT


def cpu_count() -> int:
    return os.cpu_count() or 1


@contextmanager
def busy_cores() -> Iterator[list[float]]:
    """How many cores of the machine were busy (whatever ran on them: service, database, load
    generator) over the block, in the list yielded, from /proc/stat: tells a throughput that
    stopped growing because the cores are busy from one held back by something else."""

    def jiffies() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields) - idle, sum(fields)

    busy: list[float] = []
    before = jiffies()
    yield busy
    after = jiffies()
    busy.append((after[0] - before[0]) / max(1, after[1] - before[1]) * cpu_count())


def create_admin_key(data_dir: Path) -> str:
    """A new admin key for the service on ``data_dir``, created with the CLI as an operator would
    (``python -m app admin create-key``; it creates the database if need be)."""
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir)}
    created = subprocess.run(
        [sys.executable, "-m", "app", "admin", "create-key", "--name", "benchmark"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def start_service(
    port: int, ready_within_s: float = 600, settle: bool = True, **settings: str
) -> subprocess.Popen[bytes]:
    """The real service (``python -m app serve``) on a loopback port with ``READMIT_*`` settings
    (``data_dir="..."`` sets READMIT_DATA_DIR), once /readyz answers. The per-key rate limit is
    lifted: a benchmark's clients share a key, and the throttle is not what it measures.
    ``settle``: also wait until its background passes' process leads them (what a start's timing
    leaves out); a node that will not lead (another node of its database does) is started
    without. A port another service still holds is refused: its /readyz would answer for this one."""
    if not port_is_free(port):
        raise RuntimeError(f"port {port} is taken: a service of an earlier run may still be serving")
    if "data_dir" in settings:
        ensure_audit_key(Settings(data_dir=Path(settings["data_dir"])))
    env = {
        **os.environ,
        "READMIT_REQUESTS_PER_MINUTE": "100000000",
        "READMIT_METRICS_TOKEN": os.environ.get("READMIT_METRICS_TOKEN", "benchmark"),
        **{f"READMIT_{name.upper()}": value for name, value in settings.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        give_up = time.monotonic() + ready_within_s
        while time.monotonic() < give_up:
            if process.poll() is not None:
                raise RuntimeError(f"the service ended at its start (exit code {process.returncode})")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    if settle:
                        wait_for_the_background_passes(port, env["READMIT_METRICS_TOKEN"])
                    return process
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the service did not become ready")
    except BaseException:  # never left serving, unowned, once the run has failed
        process.kill()
        process.wait()
        raise


def wait_for_the_background_passes(port: int, token: str = "benchmark", within_s: float = 30) -> None:
    """Until the process of the background passes leads them: it starts once the service is
    ready, and its start (a second of imports) would weigh on the first figures measured."""
    give_up = time.monotonic() + within_s
    while time.monotonic() < give_up:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if scraped.status_code == 200:
            for family in text_string_to_metric_families(scraped.text):
                if family.name == "readmit_background_passes_leading" and sum(s.value for s in family.samples) >= 1:
                    return
        time.sleep(0.1)
    raise RuntimeError("the background passes did not start")


MATCHER_SAMPLES = (
    "readmit_matcher_search_seconds_sum",
    "readmit_matcher_batch_searches_sum",
    "readmit_matcher_batch_searches_count",
)


@contextmanager
def matcher_busy(port: int, token: str = "benchmark") -> Iterator[dict[str, float]]:
    """The share of the block's time the service's matcher spent matching, and its batches' mean
    size, from its /metrics (``matcher_busy``, ``batch_searches`` in the dict yielded): tells a
    throughput the matcher bounds (a node matches one batch at a time, whatever its processes)
    from one held back by the work around it."""

    def sums() -> dict[str, float]:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        scraped.raise_for_status()
        found = dict.fromkeys(MATCHER_SAMPLES, 0.0)
        for family in text_string_to_metric_families(scraped.text):
            for sample in family.samples:
                if sample.name in found:
                    found[sample.name] += sample.value
        return found

    figures: dict[str, float] = {}
    before, started = sums(), time.perf_counter()
    yield figures
    after, wall_s = sums(), time.perf_counter() - started
    seconds, searches, batches = (after[name] - before[name] for name in MATCHER_SAMPLES)
    figures["matcher_busy"] = seconds / wall_s
    figures["batch_searches"] = searches / batches if batches else 0.0


def port_is_free(port: int) -> bool:
    """Nothing listens on the loopback ``port`` (connections of earlier runs closing do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


SCRATCH_PREFIX = "readmit_bench_"


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``server_url`` for one measurement; its URL,
    then dropped. After a bulk load an autovacuum worker is often at work in it, which a
    non-superuser cannot stop and which may outlast the server's own wait at DROP: the database
    is then left, said so, and dropped by the next run, so that the figures are never lost."""
    server = make_url(server_url)
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        left = connection.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"), {"prefix": f"{SCRATCH_PREFIX}%"}
        ).scalars()
        for earlier in list(left):
            _drop(admin, earlier)
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        if not _drop(admin, name):
            print(f"scratch database {name} left behind (an autovacuum worker in it): the next run drops it")
        admin.dispose()


def _drop(admin: Engine, name: str) -> bool:
    """Drop a scratch database; False when another session is in it."""
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    except OperationalError:
        return False
    return True
