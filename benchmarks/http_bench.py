"""End-to-end identification over HTTP: throughput and latency with many concurrent clients,
with micro-batching and without it, against the same gallery, in one run.

Sets up a data folder (principals, a gallery of synthetic 512-d templates bulk-loaded into the
database, an agreement), then starts the real service (``python -m app serve``) twice on it:
``READMIT_MAX_BATCH_SEARCHES=64`` and ``=1``. Each run sends identifications of enrolled people
from ``--clients`` concurrent clients for ``--seconds`` seconds on loopback.

    python benchmarks/http_bench.py --size 1000000            # several minutes, ~8 GB RAM
    python benchmarks/http_bench.py --size 1000000 --exact    # exact search: the matcher is the bottleneck
    python benchmarks/http_bench.py --size 100000 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentiles_ms, print_json, print_table

from app.agreements.service import create_agreement
from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.galleries import enrolment
from app.galleries.service import create_gallery
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime
from matcher import Metric, TemplateFormat
from matcher.synthetic import make_synthetic_set

PORT = 18800


def prepare(data_dir: Path, size: int, probes: int) -> tuple[str, np.ndarray]:
    """Fill the database; returns a border police key and mated probes."""
    settings = Settings(data_dir=data_dir)
    runtime = Runtime.create(settings)
    upgrade_to_head(settings, runtime.engine)
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
    print(f"bulk-loaded {size:,} records in {time.perf_counter() - started:.0f} s")
    runtime.engine.dispose()
    return police_key, data.mated_probes


def start_service(data_dir: Path, max_batch: int, exact_max: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(data_dir),
        "READMIT_MAX_BATCH_SEARCHES": str(max_batch),
        "READMIT_EXACT_MAX_TEMPLATES": str(exact_max),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(3000):
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not become ready")


async def load(key: str, probes: np.ndarray, clients: int, seconds: float) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{PORT}", headers=headers, timeout=120, limits=httpx.Limits(max_connections=clients)
    ) as client:
        cases = []
        for number in range(clients):
            response = await client.post(
                "/v1/cases",
                json={
                    "external_ref": f"BENCH-{time.time_ns()}-{number}",
                    "detained_at": datetime.now(UTC).isoformat(),
                    "detention_limit_days": 45,
                    "presumed_countries": ["SEN"],
                    "legal_basis": "readmission_agreement",
                },
            )
            cases.append(response.json()["id"])
        body = {
            "modality": "face",
            "template_format": {"model": "synthetic-arcface", "dimension": 512},
            "wait_ms": 30_000,
        }
        warm = await client.post(f"/v1/cases/{cases[0]}/identifications", json={**body, "probes": [probes[0].tolist()]})
        assert warm.status_code == 200, warm.text
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def one_client(number: int) -> None:
            nonlocal errors
            turn = number
            while time.perf_counter() < stop:
                probe = probes[turn % len(probes)]
                turn += clients
                started = time.perf_counter()
                response = await client.post(
                    f"/v1/cases/{cases[number]}/identifications", json={**body, "probes": [probe.tolist()]}
                )
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        wall = time.perf_counter() - began
    return {"requests": len(latencies), "errors": errors, "per_s": len(latencies) / wall, **percentiles_ms(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--exact", action="store_true", help="keep the gallery on exact search whatever its size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        key, probes = prepare(data_dir, args.size, 500)
        figures: dict[str, object] = {
            "size": args.size,
            "clients": args.clients,
            "seconds": args.seconds,
            "index": "exact" if args.exact else "by size",
        }
        for name, max_batch in (("batched", 64), ("unbatched", 1)):
            process = start_service(data_dir, max_batch, args.size + 1 if args.exact else 200_000)
            try:
                figures[name] = asyncio.run(load(key, probes, args.clients, args.seconds))
            finally:
                process.terminate()
                process.wait(timeout=60)
        batched, unbatched = figures["batched"], figures["unbatched"]
        figures["throughput_ratio"] = batched["per_s"] / unbatched["per_s"]  # type: ignore[index]
        print_table(
            f"HTTP identification, {args.size:,} templates ({figures['index']} index), {args.clients} clients",
            [
                (name, f"{f['per_s']:.1f}/s  p50 {f['p50_ms']:.0f} ms  p99 {f['p99_ms']:.0f} ms  errors {f['errors']}")
                for name, f in (("micro-batching", batched), ("no batching", unbatched))
            ]
            + [("throughput ratio", f"{figures['throughput_ratio']:.2f}x")],
        )
        print_json(figures)


if __name__ == "__main__":
    main()
