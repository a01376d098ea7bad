"""End-to-end identification over HTTP against the matcher it wraps, same gallery, same probes,
one run: what the service costs on top of the search.

Sets up a data folder (principals, a gallery of synthetic 512-d templates bulk-loaded into the
database, an agreement), starts the real service (``python -m app serve``) on it, and sends
identifications of enrolled people from one client, then from ``--clients`` concurrent clients,
for ``--seconds`` seconds each on loopback, with ``probes_b64``. Then it stops the service, loads
the snapshot the service wrote into an in-process ``GalleryIndex`` and times the same probes:
one at a time (p50, p99) and in batches of 64 (probes/s). Printed beside the figures: the issue's
goals (HTTP p50 against the matcher's p50 + 2 ms, HTTP p99 against 8 ms, the HTTP throughput
with many clients as a share of the matcher's batched rate) and the ratios of HTTP to matcher
for one client (p50, p99). The service runs on SQLite, then on a scratch PostgreSQL database
when ``--postgres-url`` (default READMIT_TEST_POSTGRES_URL) names a server; each database's
figures are set against the matcher loaded from that run's own snapshot.

    python benchmarks/http_bench.py --size 1000000            # several minutes, ~8 GB RAM
    python benchmarks/http_bench.py --size 1000000 --exact    # exact search: the matcher is the bottleneck
    python benchmarks/http_bench.py --size 100000 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from common import ensure_audit_key, percentiles_ms, print_json, print_table, scratch_database, scratch_folder
from common import start_service as common_start_service

from app.agreements.service import create_agreement
from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.galleries import enrolment
from app.galleries.service import create_gallery
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime
from matcher import GalleryIndex, IndexPolicy, Metric, TemplateFormat
from matcher.synthetic import make_synthetic_set
from matcher.tuning import restart_with_huge_pages

PORT = 18800
PACED_PROBES = 300


def prepare(data_dir: Path, size: int, probes: int, database_url: str | None = None) -> tuple[str, np.ndarray]:
    """Fill the database; returns a border police key and mated probes."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    ensure_audit_key(settings)
    runtime = Runtime.create(settings)
    upgrade_to_head(settings, runtime.engine)
    runtime.open_keyring()
    sessions = runtime.sessions
    data = make_synthetic_set(size, 1, probes, 10, seed=8)
    admin, _ = create_principal(sessions, None, "bench admin", Role.ADMIN)
    registry, _ = create_principal(sessions, admin, "registry", Role.REGISTRY, "SEN")
    _, police_key = create_principal(sessions, admin, "police", Role.BORDER_POLICE, "FRA", "FRA-BENCH")
    fmt = TemplateFormat("synthetic-arcface", 512, Metric.COSINE)
    gallery = create_gallery(sessions, runtime.registry, admin, "SEN", "face", fmt)
    create_agreement(sessions, admin, "FRA", "SEN", ["face"], datetime(2020, 1, 1).date(), None)
    started = time.perf_counter()
    source = [enrolment.RecordBlock(0, [f"SEN-{i:08d}" for i in range(size)], [{}] * size, data.gallery)]
    limits = enrolment.EnrolmentLimits(max_records=10_000, max_templates_per_record=1)
    enrolment.load(sessions, registry.id, gallery.id, source, limits)
    print(f"bulk-loaded {size:,} records in {time.perf_counter() - started:.1f} s")
    runtime.engine.dispose()
    return police_key, data.mated_probes


def start_service(
    data_dir: Path, max_batch: int, exact_max: int, database_url: str | None = None, settle: bool = True
) -> subprocess.Popen[bytes]:
    database = {"database_url": database_url} if database_url else {}
    return common_start_service(
        PORT,
        settle=settle,
        data_dir=str(data_dir),
        max_batch_searches=str(max_batch),
        exact_max_templates=str(exact_max),
        **database,
    )


def case_body(external_ref: str) -> dict[str, object]:
    """A case detained now, presumed Senegalese: what the benchmark's gallery and agreement cover."""
    return {
        "external_ref": external_ref,
        "detained_at": datetime.now(UTC).isoformat(),
        "detention_limit_days": 45,
        "presumed_countries": ["SEN"],
        "legal_basis": "readmission_agreement",
    }


CLIENT_SLOTS = 64
"""The most clients a load may have: probe ``p`` is only ever sent by client ``p % CLIENT_SLOTS``."""

_cases: dict[str, list[int]] = {}
"""Per border police key (one per database), the clients' cases, opened at the first load."""


async def load(key: str, probes: np.ndarray, clients: int, seconds: float) -> dict[str, object]:
    """``clients`` border police systems, each with its own case, sending identifications of
    one probe (``probes_b64``) back to back for ``seconds``; the requests go through the lean
    client of loadgen.py, so that the client's CPU is not the service's.

    Client ``n`` identifies through the same case in every load of a run, with probes no other
    case ever sends: each detained person is someone no other case holds, as nearly all are.
    Probes sent through several cases would each be a person detained again under another name,
    whom the case linker links to every case that sent it before and audits each link (with
    500 probes cycled through 32 new cases per load, up to 31 links a search), a load no border
    police system makes."""
    assert clients <= CLIENT_SLOTS <= len(probes), (clients, len(probes))
    headers = {"Authorization": f"Bearer {key}"}
    cases = _cases.setdefault(key, [])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", headers=headers, timeout=120) as client:
        while len(cases) < clients:
            response = await client.post("/v1/cases", json=case_body(f"BENCH-{time.time_ns()}-{len(cases)}"))
            cases.append(response.json()["id"])
    body = {"modality": "face", "template_format": {"model": "synthetic-arcface", "dimension": 512}, "wait_ms": 30_000}
    payloads = [
        loadgen.json_body({**body, "probes_b64": [base64.b64encode(probe.astype("<f4").tobytes()).decode()]})
        for probe in probes
    ]
    owned = [payloads[number::CLIENT_SLOTS] for number in range(clients)]
    paths = [f"/v1/cases/{case}/identifications" for case in cases]

    def request(number: int, turn: int) -> bytes:
        return loadgen.post(paths[number], owned[number][turn % len(owned[number])], headers)

    warm = await loadgen.run("127.0.0.1", PORT, request, 1, 0.5)
    assert warm.errors == 0, warm.statuses
    result = await loadgen.run("127.0.0.1", PORT, request, clients, seconds)
    return {
        "requests": len(result.latencies),
        "errors": result.errors,
        "per_s": result.per_s,
        **percentiles_ms(result.latencies),
    }


def matcher_figures(
    data_dir: Path,
    exact_max: int,
    probes: np.ndarray,
    seconds: float,
    database_url: str | None = None,
    client_period_s: float | None = None,
) -> dict[str, Any]:
    """The same probes against the service's own snapshot, in this process: one at a time back
    to back; if ``client_period_s`` is given, one every ``client_period_s`` (the pace at which one
    HTTP client's requests reach the service's matcher: between two, its caches cool and its
    pool thread sleeps); then in
    batches of 64 (each probe its own search, as the service batches them). The snapshot is
    sealed: its key comes from the service's keyring, as the service itself opens it."""
    runtime = Runtime.create(Settings(data_dir=data_dir, database_url=database_url))
    runtime.open_keyring()
    key = runtime.keyring.snapshot_key(1)
    runtime.engine.dispose()
    policy = IndexPolicy(exact_max_templates=exact_max)
    index = GalleryIndex.load(data_dir / "indexes" / "gallery-1.snapshot", policy, key)
    single: list[float] = []
    stop = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < stop or len(single) < 200:
        probe = probes[turn % len(probes) : turn % len(probes) + 1]
        turn += 1
        started = time.perf_counter()
        index.search(probe, k=30)
        single.append(time.perf_counter() - started)
    paced: list[float] = []
    period_s = client_period_s or 0.0
    for turn in range(PACED_PROBES if client_period_s is not None else 0):
        started = time.perf_counter()
        index.search(probes[turn % len(probes) : turn % len(probes) + 1], k=30)
        paced.append(time.perf_counter() - started)
        time.sleep(max(0.0, period_s - paced[-1]))
    batch = 64
    groups = np.arange(batch)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = done % (len(probes) - batch)
        index.search(probes[start : start + batch], k=30, probe_groups=groups)
        done += batch
    return {
        **percentiles_ms(single),
        "paced": {"client_period_ms": period_s * 1000, **percentiles_ms(paced)} if paced else None,
        "batched_per_s": done / (time.perf_counter() - began),
        "kind": index.kind.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--exact", action="store_true", help="keep the gallery on exact search whatever its size")
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    restart_with_huge_pages()
    exact_max = args.size + 1 if args.exact else 200_000
    with scratch_folder() as folder:
        runs = {"sqlite": serve_and_load(Path(folder) / "sqlite", None, exact_max, args)}
        if args.postgres_url:
            with scratch_database(args.postgres_url) as url:
                runs["postgresql"] = serve_and_load(Path(folder) / "postgresql", url, exact_max, args)
    figures: dict[str, object] = {"size": args.size, "clients": args.clients, "seconds": args.seconds}
    for database, run in runs.items():
        one, many, matcher = run["one"], run["many"], run["matcher"]
        figures[database] = {
            "matcher": matcher,
            "http_one_client": one,
            "http_many_clients": many,
            "p50_over_matcher_ms": one["p50_ms"] - matcher["p50_ms"],
            "p50_over_paced_matcher_ms": one["p50_ms"] - matcher["paced"]["p50_ms"],
            "p50_ratio": one["p50_ms"] / matcher["p50_ms"],
            "p99_ratio": one["p99_ms"] / matcher["p99_ms"],
            "throughput_share": many["per_s"] / matcher["batched_per_s"],
            "start_ready_s": run["start_ready_s"],
        }
        print_table(
            f"HTTP identification ({database}) against its matcher, {args.size:,} templates ({matcher['kind']} index)",
            [
                ("matcher, one probe", f"p50 {matcher['p50_ms']:.2f} ms  p99 {matcher['p99_ms']:.2f} ms"),
                (
                    f"matcher, one probe every {matcher['paced']['client_period_ms']:.1f} ms (one client's pace)",
                    f"p50 {matcher['paced']['p50_ms']:.2f} ms  p99 {matcher['paced']['p99_ms']:.2f} ms",
                ),
                ("matcher, batches of 64", f"{matcher['batched_per_s']:.0f} probes/s"),
                ("HTTP, one client", f"p50 {one['p50_ms']:.2f} ms  p99 {one['p99_ms']:.2f} ms  errors {one['errors']}"),
                (
                    f"HTTP, {args.clients} clients",
                    f"{many['per_s']:.0f}/s  p50 {many['p50_ms']:.0f} ms  p99 {many['p99_ms']:.0f} ms  "
                    f"errors {many['errors']}",
                ),
                ("HTTP p50 - matcher p50 (goal <= 2 ms)", f"{one['p50_ms'] - matcher['p50_ms']:.2f} ms"),
                (
                    "HTTP p50 - the matcher's p50 at one client's pace",
                    f"{one['p50_ms'] - matcher['paced']['p50_ms']:.2f} ms",
                ),
                ("HTTP p99, one client (goal <= 8 ms)", f"{one['p99_ms']:.2f} ms"),
                (
                    "HTTP / matcher, one client: p50, p99",
                    f"{one['p50_ms'] / matcher['p50_ms']:.2f}x  {one['p99_ms'] / matcher['p99_ms']:.2f}x",
                ),
                (
                    "HTTP throughput / matcher batched (goal >= 50% PQ, 80% exact)",
                    f"{many['per_s'] / matcher['batched_per_s']:.1%}",
                ),
                (
                    "readmit serve, start to ready from a current snapshot (goal <= 3 s)",
                    f"{run['start_ready_s']:.2f} s",
                ),
            ],
        )
    print_json(figures)


def serve_and_load(
    data_dir: Path, database_url: str | None, exact_max: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Fill a database, serve it, and load it from one client, then from ``args.clients``; then
    time its matcher on the snapshot it wrote, and its start from that snapshot."""
    key, probes = prepare(data_dir, args.size, 500, database_url)
    process = start_service(data_dir, 64, exact_max, database_url)
    try:
        one = asyncio.run(load(key, probes, 1, args.seconds))
        many = asyncio.run(load(key, probes, args.clients, args.seconds))
    finally:
        process.terminate()  # a graceful stop writes the snapshot the matcher loads
        process.wait(timeout=120)
    started = time.perf_counter()
    process = start_service(data_dir, 64, exact_max, database_url, settle=False)  # from the snapshot just written
    ready_s = time.perf_counter() - started
    process.terminate()
    process.wait(timeout=120)
    period_s = one["p50_ms"] / 1000
    matcher = matcher_figures(data_dir, exact_max, probes, args.seconds, database_url, client_period_s=period_s)
    return {"one": one, "many": many, "matcher": matcher, "start_ready_s": ready_s}


if __name__ == "__main__":
    main()
