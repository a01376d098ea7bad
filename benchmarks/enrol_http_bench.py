"""Enrolment over HTTP: templates/s through ``POST /v1/galleries/{id}/records:batch`` with
``templates_b64``, against the real service started as its own process on a free loopback port.

Sets up a data folder (an admin, a registry officer, an empty 512-d gallery), starts
``python -m app serve``, then posts batches of ``--batch`` new records (one template each, as
base64 of little-endian float32) from ``--clients`` concurrent clients until ``--size`` records
are stored. Bodies are serialised before the clock starts, so that the figure is the service's.
The per-principal request limit is raised for the run: a bulk client sends more than the
default 1,200 calls a minute on purpose.

    python benchmarks/enrol_http_bench.py --size 100000
    python benchmarks/enrol_http_bench.py --size 100000 --postgres-url postgresql+psycopg://u:p@127.0.0.1/postgres
(the PostgreSQL URL defaults to READMIT_TEST_POSTGRES_URL only with --postgres; a fresh database
is created and dropped)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_audit_key, print_json, print_table, scratch_database, scratch_folder
from common import start_service as common_start_service

from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.galleries.service import create_gallery
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime
from matcher import Metric, TemplateFormat


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(settings: Settings) -> tuple[str, int]:
    """A registry officer's key and an empty 512-d gallery of its country."""
    ensure_audit_key(settings)
    runtime = Runtime.create(settings)
    upgrade_to_head(settings, runtime.engine)
    runtime.open_keyring()
    admin, _ = create_principal(runtime.sessions, None, "bench admin", Role.ADMIN)
    _, key = create_principal(runtime.sessions, admin, "registry", Role.REGISTRY, "SEN")
    fmt = TemplateFormat("synthetic-arcface", 512, Metric.COSINE)
    gallery_id = create_gallery(runtime.sessions, runtime.registry, admin, "SEN", "face", fmt).id
    runtime.engine.dispose()
    return key, gallery_id


def bodies(size: int, batch: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for start in range(0, size, batch):
        templates = rng.standard_normal((min(batch, size - start), 512)).astype("<f4")
        records = [
            {
                "reference_id": f"SEN-{start + i:09d}",
                "templates_b64": [base64.b64encode(row.tobytes()).decode()],
                "attributes": {"family_name": f"Name{start + i}"},
            }
            for i, row in enumerate(templates)
        ]
        out.append(json.dumps({"records": records}).encode())
    return out


def start_service(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    database = {"database_url": settings.database_url} if settings.database_url else {}
    return common_start_service(port, data_dir=str(settings.data_dir), **database)


async def post_all(port: int, key: str, gallery_id: int, payloads: list[bytes], clients: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    queue = list(reversed(payloads))
    inserted = 0
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300, limits=httpx.Limits(max_connections=clients)
    ) as client:

        async def one_client() -> None:
            nonlocal inserted
            while queue:
                payload = queue.pop()
                started = time.perf_counter()
                response = await client.post(f"/v1/galleries/{gallery_id}/records:batch", content=payload)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:500]
                body = response.json()
                assert not body["errors"], body["errors"][:3]
                inserted += body["inserted"]

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - began
    return {
        "templates": inserted,
        "seconds": wall,
        "templates_per_s": inserted / wall,
        "batch_p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "batch_max_ms": float(max(latencies) * 1e3),
    }


def run(settings: Settings, size: int, batch: int, clients: int) -> dict[str, float]:
    key, gallery_id = prepare(settings)
    payloads = bodies(size, batch)
    port = free_port()
    process = start_service(settings, port)
    try:
        figures = asyncio.run(post_all(port, key, gallery_id, payloads, clients))
        gallery = httpx.get(
            f"http://127.0.0.1:{port}/v1/galleries/{gallery_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert gallery["template_count"] == size, gallery
    finally:
        process.terminate()
        process.wait(timeout=60)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--postgres", action="store_true", help="also on READMIT_TEST_POSTGRES_URL")
    args = parser.parse_args()
    postgres_url = args.postgres_url or (os.environ.get("READMIT_TEST_POSTGRES_URL") if args.postgres else None)
    figures: dict[str, object] = {"size": args.size, "batch": args.batch, "clients": args.clients}
    with scratch_folder() as folder:
        base = Path(folder)
        figures["sqlite"] = run(Settings(data_dir=base / "sqlite"), args.size, args.batch, args.clients)
        if postgres_url:
            with scratch_database(postgres_url) as url:
                figures["postgresql"] = run(
                    Settings(data_dir=base / "pg", database_url=url), args.size, args.batch, args.clients
                )
    rows = [
        (
            backend,
            f"{f['templates_per_s']:,.0f} templates/s over HTTP with templates_b64 "  # type: ignore[index]
            f"(batches of {args.batch:,}, {args.clients} clients, batch p50 {f['batch_p50_ms']:.0f} ms)",  # type: ignore[index]
        )
        for backend, f in figures.items()
        if isinstance(f, dict)
    ]
    print_table(f"enrolment over HTTP of {args.size:,} records of one 512-d template", rows)
    print_json(figures)


if __name__ == "__main__":
    main()
