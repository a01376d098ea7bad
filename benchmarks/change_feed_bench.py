"""Change-feed lag: from an enrolment committed through one service process to the record in
another's index (searchable there), two real ``readmit serve`` processes on one PostgreSQL
database (each with its own data folder), with B's histogram ``readmit_index_change_lag_seconds``
(commit to applied) beside it. B's index is watched through its ``readmit_index_templates``
gauge rather than by identifications, which would recalibrate the growing gallery's thresholds.

    python benchmarks/change_feed_bench.py --records 200
(the PostgreSQL URL defaults to READMIT_TEST_POSTGRES_URL; a fresh database is created and dropped)

The client-side figure is an upper bound: it includes the scrapes spent finding out (one every
``--retry-ms``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ensure_audit_key,
    percentiles_ms,
    print_json,
    print_table,
    scratch_database,
    scratch_folder,
    start_service,
)

from app.core.config import Settings

DIMENSION = 64


def admin_key(data_dir: Path, database_url: str) -> str:
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir), "READMIT_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "app", "admin", "create-key", "--name", "benchmark"]
    created = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return created.stdout.strip().splitlines()[-1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def principal(client: httpx.Client, admin: dict[str, str], role: str, country: str) -> dict[str, str]:
    body = {"name": role, "role": role, "country": country}
    return bearer(client.post("/v1/principals", json=body, headers=admin).json()["api_key"])


def index_templates(metrics: str, gallery: int) -> float:
    """The templates in the gallery's index, as the scraped process reports them."""
    prefix = f'readmit_index_templates{{gallery="{gallery}"'
    return max((float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix)), default=0)


def histogram_quantile(metrics: str, name: str, quantile: float) -> float:
    """The upper bound of the bucket holding ``quantile`` of a Prometheus histogram."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float(bound), float(line.split()[-1])))
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= quantile * total)


def measure(database_url: str, folder: Path, records: int, retry_s: float) -> dict[str, object]:
    a_dir, b_dir = folder / "a", folder / "b"
    ensure_audit_key(Settings(data_dir=a_dir))
    key = admin_key(a_dir, database_url)
    common = {"database_url": database_url, "audit_key_file": str(a_dir / "audit-log.key")}
    a = start_service(8931, data_dir=str(a_dir), **common)
    try:
        b = start_service(8932, settle=False, data_dir=str(b_dir), **common)  # A leads the background passes
    except BaseException:
        a.terminate()
        a.wait()
        raise
    lags: list[float] = []
    try:
        with (
            httpx.Client(base_url="http://127.0.0.1:8931", timeout=30) as to_a,
            httpx.Client(base_url="http://127.0.0.1:8932", timeout=30) as to_b,
        ):
            admin = bearer(key)
            fmt = {"model": "bench", "dimension": DIMENSION}
            gallery = to_a.post(
                "/v1/galleries", headers=admin, json={"country": "SEN", "modality": "face", "template_format": fmt}
            ).json()["id"]
            registry = principal(to_a, admin, "registry", "SEN")
            rng = np.random.default_rng(1)
            for i in range(records):
                template = rng.standard_normal(DIMENSION).round(5).tolist()
                record = {"reference_id": f"LAG-{i:05d}", "templates": [template]}
                to_a.post(f"/v1/galleries/{gallery}/records:batch", headers=registry, json={"records": [record]})
                committed = time.perf_counter()
                while index_templates(to_b.get("/metrics", headers=admin).text, gallery) < i + 1:
                    time.sleep(retry_s)
                lags.append(time.perf_counter() - committed)
            metrics = to_b.get("/metrics", headers=admin).text
    finally:
        for process in (a, b):
            process.terminate()
            process.wait(timeout=30)
    name = "readmit_index_change_lag_seconds"
    return {
        "records": records,
        "enrolled_to_in_b_index": percentiles_ms(lags),
        "max_ms": max(lags) * 1000,
        "b_histogram_p50_le_s": histogram_quantile(metrics, name, 0.5),
        "b_histogram_p99_le_s": histogram_quantile(metrics, name, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200, help="enrolments through A, one record each")
    parser.add_argument("--retry-ms", type=float, default=2, help="pause between scrapes of B")
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("needs PostgreSQL: --postgres-url or READMIT_TEST_POSTGRES_URL")
    with scratch_folder() as folder, scratch_database(args.postgres_url) as url:
        figures = measure(url, Path(folder), args.records, args.retry_ms / 1000)
    lag = figures["enrolled_to_in_b_index"]
    assert isinstance(lag, dict)
    print_table(
        f"change feed lag, {args.records} enrolments through A, in B's index (PostgreSQL, two processes)",
        [
            ("enrolled to in B's index (client)", f"p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms"),
            (
                "commit to applied (B's histogram)",
                f"p50 ≤ {figures['b_histogram_p50_le_s']} s, p99 ≤ {figures['b_histogram_p99_le_s']} s",
            ),
        ],
    )
    print_json(figures)


if __name__ == "__main__":
    main()
