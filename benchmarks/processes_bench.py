"""Several service processes and nodes on one PostgreSQL database, in one run.

1. **Throughput with 1, 2 and 4 processes** (``readmit serve --processes N``): ``--clients``
   border police systems send one-probe identifications (``probes_b64``) for ``--seconds``;
   the in-process matcher's batched rate on the service's own snapshot and the same probes is
   the reference. Goal on a 2-vCPU machine: 2 processes >= 1.5x one, until the cores are busy.
2. **Fail-over**: two nodes (two ``readmit serve``, each its own data folder, one database, one
   audit key). Clients identify through node A with ``wait_ms`` 0, so that every accepted search
   is written queued and held under A's lease; A is killed with SIGKILL; the clients go on
   through node B. Printed: how long until every search A had accepted is ended by B (the lease
   expiry bounds it, 10 s by default), how many were lost and how many answered twice (none
   expected), and whether the clients' calls to B all succeeded. Every call carries an
   ``Idempotency-Key``: each one A accepted is resent to B with its key, as a client that lost
   A's answer would, and must be answered A's search, not a new one.

The change feed's lag (enrolled through one process, searchable through another) is measured by
benchmarks/change_feed_bench.py.

    python benchmarks/processes_bench.py                    # 200k exact, a few minutes
    python benchmarks/processes_bench.py --size 1000000     # PQ gallery
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_bench
from common import (
    busy_cores,
    cpu_count,
    matcher_busy,
    print_json,
    print_table,
    scratch_database,
    scratch_folder,
    start_service,
)

from matcher.tuning import restart_with_huge_pages

WARM_UP_S = 3.0
WARM_UP_WINDOWS = 20
EXACT_MAX = 200_000
"""The service's default: galleries up to this size are searched exactly."""


def warm_up(key: str, probes: np.ndarray, clients: int) -> None:
    """Load until the rate settles: each process calibrates a gallery's thresholds at its first
    search of it (leave-one-out searches: seconds at 200k), which is no steady state."""
    previous = 0.0
    for _ in range(WARM_UP_WINDOWS):
        rate = asyncio.run(http_bench.load(key, probes, clients, WARM_UP_S))["per_s"]
        assert isinstance(rate, float)
        if previous and abs(rate - previous) <= 0.15 * previous:
            return
        previous = rate


def throughput(
    data_dir: Path, url: str, key: str, probes: Any, processes: int, args: argparse.Namespace
) -> tuple[float, float, dict[str, float]]:
    """Identifications per second, the machine's cores busy meanwhile, and how busy the node's
    matcher was (see :func:`common.matcher_busy`)."""
    process = http_bench.common_start_service(
        http_bench.PORT,
        data_dir=str(data_dir),
        database_url=url,
        processes=str(processes),
        max_batch_searches="64",
    )
    try:
        warm_up(key, probes, args.clients)
        with busy_cores() as busy, matcher_busy(http_bench.PORT) as matcher:
            many = asyncio.run(http_bench.load(key, probes, args.clients, args.seconds))
    finally:
        process.terminate()  # a graceful stop writes the snapshot the matcher loads
        process.wait(timeout=120)
    assert many["errors"] == 0, many
    rate = many["per_s"]
    assert isinstance(rate, float)
    return rate, busy[0], matcher


NODE_B_PORT = http_bench.PORT + 1
FAILOVER_CLIENTS = 8


Call = tuple[int, str, dict[str, Any]]
"""An identification as a client sent it: its case, its idempotency key and its body."""


async def identify_until(
    base: str, key: str, cases: list[int], probes: np.ndarray, until: float
) -> tuple[dict[int, Call], int, int]:
    """Clients, one per case, identifying with ``wait_ms`` 0 until ``until``: the searches
    accepted (200 or 202), by id, with the call that made each; the calls that failed at the
    HTTP level (the node gone), and the calls answered with an error status."""
    body = {"modality": "face", "template_format": {"model": "synthetic-arcface", "dimension": 512}, "wait_ms": 0}
    accepted: dict[int, Call] = {}
    failed = refused = 0

    async def client(case: int, offset: int) -> None:
        nonlocal failed, refused
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as api:
            turn = offset
            while time.monotonic() < until:
                probe = probes[turn % len(probes)]
                turn += FAILOVER_CLIENTS
                payload = {**body, "probes_b64": [base64.b64encode(probe.astype("<f4").tobytes()).decode()]}
                idempotency = str(uuid.uuid4())
                try:
                    response = await api.post(
                        f"/v1/cases/{case}/identifications", json=payload, headers={"Idempotency-Key": idempotency}
                    )
                except httpx.HTTPError:
                    failed += 1
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code in (200, 202):
                    accepted[response.json()["id"]] = (case, idempotency, payload)
                else:
                    refused += 1

    await asyncio.gather(*(client(case, number) for number, case in enumerate(cases)))
    return accepted, failed, refused


def resend(base: str, key: str, calls: dict[int, Call]) -> int:
    """Resend each call with its idempotency key through ``base``; returns how many were
    answered the search first accepted (the others: a second search, or an error)."""
    same = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        for search_id, (case, idempotency, payload) in calls.items():
            response = api.post(
                f"/v1/cases/{case}/identifications", json=payload, headers={"Idempotency-Key": idempotency}
            )
            same += response.status_code in (200, 202) and response.json()["id"] == search_id
    return same


def settle(base: str, key: str, search_ids: list[int], give_up_s: float) -> tuple[float, list[int], list[int]]:
    """Poll each search through ``base`` until it is neither queued nor running: when the last
    one was seen ended (``time.monotonic()``), the ids never settled, and the ids whose
    candidates came twice."""
    pending, duplicated = set(search_ids), []
    started = time.monotonic()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as api:
        while pending and time.monotonic() - started < give_up_s:
            for search_id in list(pending):
                search = api.get(f"/v1/searches/{search_id}").json()
                if search["status"] in ("queued", "running"):
                    continue
                pending.discard(search_id)
                ranks = [candidate["rank"] for candidate in search.get("candidates", [])]
                if len(ranks) != len(set(ranks)):
                    duplicated.append(search_id)
            time.sleep(0.05)
    return time.monotonic(), sorted(pending), duplicated


def failover(folder: Path, data_dir: Path, url: str, key: str, probes: np.ndarray) -> dict[str, Any]:
    """Node A (data_dir) and node B (a copy of its snapshots and audit key), A killed under load."""
    node_b = folder / "node-b"
    shutil.copytree(data_dir, node_b, ignore=shutil.ignore_patterns("readmit.lock", "metrics"))
    a = start_service(http_bench.PORT, data_dir=str(data_dir), database_url=url, search_workers="1")
    b = start_service(NODE_B_PORT, settle=False, data_dir=str(node_b), database_url=url, search_workers="1")  # A leads
    try:
        node_a, node_b_url = f"http://127.0.0.1:{http_bench.PORT}", f"http://127.0.0.1:{NODE_B_PORT}"
        with httpx.Client(base_url=node_a, headers={"Authorization": f"Bearer {key}"}) as api:
            cases = [
                api.post("/v1/cases", json=http_bench.case_body(f"FAILOVER-{time.time_ns()}-{number}")).json()["id"]
                for number in range(FAILOVER_CLIENTS)
            ]
        before, _, refused_a = asyncio.run(identify_until(node_a, key, cases, probes, time.monotonic() + 3))
        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.monotonic()
        resent_same = resend(node_b_url, key, before)  # A's answers lost: each call again, with its key
        all_ended, lost, duplicated = settle(node_b_url, key, list(before), give_up_s=60)
        after, failed_b, refused_b = asyncio.run(identify_until(node_b_url, key, cases, probes, time.monotonic() + 3))
        _, lost_b, duplicated_b = settle(node_b_url, key, list(after), give_up_s=60)
        return {
            "accepted_by_a": len(before),
            "resent_to_b_answered_a_s_search": resent_same,
            "accepted_by_b": len(after),
            "errors_on_b": failed_b + refused_b,
            "refused_by_a": refused_a,
            "all_ended_after_kill_s": None if lost else all_ended - killed,
            "lost": len(lost) + len(lost_b),
            "answered_twice": len(duplicated) + len(duplicated_b),
        }
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)


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
    with scratch_folder() as folder, scratch_database(args.postgres_url) as url:
        data_dir = Path(folder) / "node-a"
        key, probes = http_bench.prepare(data_dir, args.size, 500, url)
        measured = {n: throughput(data_dir, url, key, probes, n, args) for n in args.processes}
        matcher = http_bench.matcher_figures(data_dir, EXACT_MAX, probes, args.seconds, url)
        figures["failover"] = failover(Path(folder), data_dir, url, key, probes)
    rates = {n: rate for n, (rate, _, _) in measured.items()}
    one = rates[min(rates)]
    figures["matcher"] = matcher
    figures["throughput_per_s"] = rates
    figures["busy_cores"] = {n: busy for n, (_, busy, _) in measured.items()}
    figures["node_matcher"] = {n: matcher for n, (_, _, matcher) in measured.items()}
    figures["speedup_over_one_process"] = {n: rate / one for n, rate in rates.items()}
    rows = [("matcher in process, batches of 64", f"{matcher['batched_per_s']:.0f} probes/s ({matcher['kind']})")]
    for n, rate in rates.items():
        rows.append(
            (
                f"{n} process{'es' if n > 1 else ''}, {args.clients} clients",
                f"{rate:.0f}/s  = {rate / one:.2f}x one process, {rate / matcher['batched_per_s']:.1%} of the matcher,"
                f" {figures['busy_cores'][n]:.1f} of {cpu_count()} cores busy, the node's matcher"
                f" {figures['node_matcher'][n]['matcher_busy']:.0%} (batches of"
                f" {figures['node_matcher'][n]['batch_searches']:.1f})",
            )
        )
    print_table(f"Identification throughput by service processes, PostgreSQL, {args.size:,} templates", rows)
    over = figures["failover"]
    print_table(
        "Fail-over: node A killed with SIGKILL under load, its clients moved to node B",
        [
            ("searches accepted by A (written queued, A's lease)", str(over["accepted_by_a"])),
            (
                "resent to B with their Idempotency-Key: answered A's search (goal: all)",
                f"{over['resent_to_b_answered_a_s_search']} of {over['accepted_by_a']}",
            ),
            ("searches accepted by B after the kill / errors on B", f"{over['accepted_by_b']} / {over['errors_on_b']}"),
            (
                "every search ended, from the kill (goal: lease expiry <= 10 s)",
                "not all" if over["all_ended_after_kill_s"] is None else f"{over['all_ended_after_kill_s']:.1f} s",
            ),
            ("lost / answered twice (goal 0 / 0)", f"{over['lost']} / {over['answered_twice']}"),
        ],
    )
    print_json(figures)


if __name__ == "__main__":
    main()
