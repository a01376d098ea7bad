"""Bounded load test on loopback: identifications, enrolments and consular reviews at once,
from concurrent clients, for a fixed time. Reports throughput, p50/p99 per kind, errors, and the
server's resident memory at the start and the end of the run (memory should stay flat).

    python benchmarks/load_test.py --size 100000 --seconds 60
    python benchmarks/load_test.py --seconds 600 --no-enrol   # soak: memory must stay flat
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentiles_ms, print_json, print_table, scratch_folder
from http_bench import PORT, prepare, start_service

from app.core.config import Settings
from app.db.session import make_engine, make_session_factory
from app.principals.models import Role
from app.principals.service import create_principal


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def keys(data_dir: Path) -> tuple[str, str]:
    """A registry and a consular key for the load's enrolments and reviews."""
    engine = make_engine(Settings(data_dir=data_dir).sqlalchemy_url)
    sessions = make_session_factory(engine)
    _, registry = create_principal(sessions, None, "load registry", Role.REGISTRY, "SEN")
    _, consul = create_principal(sessions, None, "load consul", Role.CONSULAR, "SEN")
    engine.dispose()
    return registry, consul


async def run(
    police: str,
    registry: str,
    consul: str,
    probes: np.ndarray,
    clients: int,
    seconds: float,
    enrol: bool = True,
    server_pid: int | None = None,
):
    latencies: dict[str, list[float]] = {"identify": [], "enrol": [], "review": []}
    errors: dict[str, int] = {kind: 0 for kind in latencies}
    rng = np.random.default_rng(9)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:
        auth = {"Authorization": f"Bearer {police}"}
        cases = [
            (
                await client.post(
                    "/v1/cases",
                    headers=auth,
                    json={
                        "external_ref": f"LOAD-{time.time_ns()}-{n}",
                        "detained_at": "2026-11-20T08:00:00Z",
                        "detention_limit_days": 45,
                        "presumed_countries": ["SEN"],
                        "legal_basis": "consent",
                    },
                )
            ).json()["id"]
            for n in range(clients)
        ]
        stop = time.perf_counter() + seconds

        async def timed(kind: str, call) -> None:  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            response = await call
            latencies[kind].append(time.perf_counter() - started)
            errors[kind] += response.status_code >= 400 or (kind == "identify" and response.status_code != 200)

        async def worker(number: int) -> None:
            turn = 0
            while time.perf_counter() < stop:
                turn += 1
                if number % 4 == 0 and enrol:  # a registry client enrols
                    records = [
                        {"reference_id": f"L{number}-{turn}-{i}", "templates": rng.standard_normal((1, 512)).tolist()}
                        for i in range(20)
                    ]
                    await timed(
                        "enrol",
                        client.post(
                            "/v1/galleries/1/records:batch",
                            json={"records": records},
                            headers={"Authorization": f"Bearer {registry}"},
                        ),
                    )
                elif number % 4 == 1:  # a consul reviews
                    await timed(
                        "review", client.get("/v1/review/candidates", headers={"Authorization": f"Bearer {consul}"})
                    )
                else:  # border police identify
                    probe = probes[(number * 1000 + turn) % len(probes)]
                    await timed(
                        "identify",
                        client.post(
                            f"/v1/cases/{cases[number]}/identifications",
                            headers=auth,
                            json={
                                "modality": "face",
                                "probes": [probe.tolist()],
                                "template_format": {"model": "synthetic-arcface", "dimension": 512},
                                "wait_ms": 30000,
                            },
                        ),
                    )

        memory: list[float] = []

        async def sample_memory() -> None:  # the server's RSS every tenth of the run
            while server_pid is not None and time.perf_counter() < stop:
                memory.append(rss_mb(server_pid))
                await asyncio.sleep(seconds / 10)

        began = time.perf_counter()
        await asyncio.gather(sample_memory(), *(worker(n) for n in range(clients)))
        wall = time.perf_counter() - began
    return {
        "rss_series_mb": memory,
        **{
            kind: {
                "requests": len(values),
                "errors": errors[kind],
                "per_s": len(values) / wall,
                **(percentiles_ms(values) if values else {}),
            }
            for kind, values in latencies.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--no-enrol", dest="enrol", action="store_false", help="identifications and reviews only (a memory soak)"
    )
    args = parser.parse_args()
    with scratch_folder() as folder:
        data_dir = Path(folder) / "data"
        police, probes = prepare(data_dir, args.size, 500)
        registry, consul = keys(data_dir)
        os.environ["READMIT_REQUESTS_PER_MINUTE"] = "10000000"  # measure the service, not its rate limits
        process = start_service(data_dir, 64, 200_000)
        try:
            asyncio.run(run(police, registry, consul, probes, 4, 3))  # warm-up: calibration, first batches
            start_rss = rss_mb(process.pid)
            results = asyncio.run(
                run(police, registry, consul, probes, args.clients, args.seconds, args.enrol, process.pid)
            )
            end_rss = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    figures = {
        "size": args.size,
        "clients": args.clients,
        "seconds": args.seconds,
        **results,
        "rss_start_mb": start_rss,
        "rss_end_mb": end_rss,
    }
    rows = [
        (
            kind,
            f"{r['per_s']:.1f}/s  p50 {r.get('p50_ms', 0):.0f} ms  p99 {r.get('p99_ms', 0):.0f} ms  "
            f"errors {r['errors']}",
        )
        for kind, r in results.items()
        if kind != "rss_series_mb"
    ]
    enrolled = results["enrol"]["requests"] * 20
    rows.append(
        (
            "server memory",
            f"{start_rss:.0f} MB at the start, {end_rss:.0f} MB at the end ({enrolled:,} records enrolled meanwhile)",
        )
    )
    rows.append(("memory over the run", ", ".join(f"{m:.0f}" for m in results["rss_series_mb"]) + " MB"))
    print_table(f"mixed load, {args.size:,} templates, {args.clients} clients, {args.seconds:.0f} s", rows)
    print_json(figures)


if __name__ == "__main__":
    main()
