"""Several service processes and nodes on one PostgreSQL database, in one run.

1. **Throughput with 1, 2 and 4 processes** (``readmit serve --processes N``): ``--clients``
   border police systems send one-probe identifications (``probes_b64``) for ``--seconds``;
   the in-process matcher's batched rate on the service's own snapshot and the same probes is
   the reference. Goal on a 2-vCPU machine: 2 processes >= 1.5x one, until the cores are busy.
2. **Change-feed lag**: two nodes (two ``readmit serve``, each its own data folder, one
   database); a record enrolled through A is searched for through B until B finds it, from
   the moment A's enrolment call returned (its commit) — p50/p99 over ``--lag-samples``.
3. **Fail-over**: clients identify through node A with ``wait_ms`` 0, so that every search is
   written queued; A is killed with SIGKILL; the clients go on through node B. Printed: how
   long until every search A had accepted is ended by B (the lease expiry bounds it), how many
   were lost (none expected) and how many answered twice (none expected).

    python benchmarks/processes_bench.py                    # 200k exact, a few minutes
    python benchmarks/processes_bench.py --size 1000000     # PQ gallery
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_bench
from common import print_json, print_table, scratch_database

from matcher.tuning import restart_with_huge_pages

EXACT_MAX = 200_000
"""The service's default: galleries up to this size are searched exactly."""


def throughput(data_dir: Path, url: str, key: str, probes: Any, processes: int, args: argparse.Namespace) -> float:
    process = http_bench.common_start_service(
        http_bench.PORT,
        data_dir=str(data_dir),
        database_url=url,
        processes=str(processes),
        max_batch_searches="64",
    )
    try:
        many = asyncio.run(http_bench.load(key, probes, args.clients, args.seconds))
    finally:
        process.terminate()  # a graceful stop writes the snapshot the matcher loads
        process.wait(timeout=120)
    assert many["errors"] == 0, many
    return float(many["per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("several processes need PostgreSQL: set --postgres-url or READMIT_TEST_POSTGRES_URL")
    restart_with_huge_pages()
    figures: dict[str, Any] = {"size": args.size, "clients": args.clients, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as folder, scratch_database(args.postgres_url) as url:
        os.environ["READMIT_MASTER_KEY_FILE"] = str(Path(folder) / "master.key")
        data_dir = Path(folder) / "node-a"
        key, probes = http_bench.prepare(data_dir, args.size, 500, url)
        rates = {n: throughput(data_dir, url, key, probes, n, args) for n in args.processes}
        matcher = http_bench.matcher_figures(data_dir, EXACT_MAX, probes, args.seconds, url)
    one = rates[min(rates)]
    figures["matcher"] = matcher
    figures["throughput_per_s"] = rates
    figures["speedup_over_one_process"] = {n: rate / one for n, rate in rates.items()}
    rows = [("matcher in process, batches of 64", f"{matcher['batched_per_s']:.0f} probes/s ({matcher['kind']})")]
    for n, rate in rates.items():
        rows.append(
            (
                f"{n} process{'es' if n > 1 else ''}, {args.clients} clients",
                f"{rate:.0f}/s  = {rate / one:.2f}x one process, {rate / matcher['batched_per_s']:.1%} of the matcher",
            )
        )
    print_table(f"Identification throughput by service processes, PostgreSQL, {args.size:,} templates", rows)
    print_json(figures)


if __name__ == "__main__":
    main()
