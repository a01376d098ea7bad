"""Identification through a peer node against a local gallery of the same size, in one run: what
federation costs a receiving state's officer.

Three real nodes on loopback, each its own data folder on SQLite: a FRA hub holding SEN's gallery
itself (the hub model), and a FRA node without it whose SEN peer holds the same gallery (the
federated model; both sides' keys, peers and agreements set up as an operator would, with
``readmit node init`` and ``readmit peer add``). The gallery is ``--size`` synthetic 512-d
templates bulk-loaded as benchmarks/http_bench.py loads them, and the same mated probes go to both
FRA nodes as ``probes_b64``: from one client (p50, p99), then from ``--clients`` concurrent
clients for ``--seconds`` seconds (identifications/s). Through the peer, each identification is
a local admission, a signed request to SEN, SEN's own admission, search and signed answer, and
FRA's check of it; SEN's notifier also tells FRA of every new search's state, as in production.

    python benchmarks/federation_bench.py                  # 20,000 templates, about two minutes
    python benchmarks/federation_bench.py --size 100000 --seconds 20
    python benchmarks/federation_bench.py --profile-dir out/fedprofile   # py-spy on both nodes

With ``--profile-dir``, both nodes' service processes (FRA's and SEN's) are sampled by py-spy
during the many-client phase through the peer (benchmarks/profiling.py), and the functions that
take the most samples in each are printed after the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import http_bench
import profiling
from common import ensure_audit_key, print_json, print_table, scratch_folder, start_service

from app.agreements.service import create_agreement
from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime

PEER_PORT = http_bench.PORT + 1
"""SEN's; both FRA nodes serve, one after the other, on http_bench's port, where its load goes."""


def cli(data_dir: Path, *arguments: str) -> str:
    """``readmit …`` on ``data_dir``, as an operator runs it; its last line of output."""
    env = {**os.environ, "READMIT_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "app", *arguments], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"readmit {' '.join(arguments)}: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def requesting_node(data_dir: Path) -> str:
    """FRA's node without SEN's gallery: its border police (a key, returned) and FRA's agreement
    with SEN, as the hub has them."""
    settings = Settings(data_dir=data_dir)
    ensure_audit_key(settings)
    runtime = Runtime.create(settings)
    upgrade_to_head(settings, runtime.engine)
    admin, _ = create_principal(runtime.sessions, None, "bench admin", Role.ADMIN)
    _, police_key = create_principal(runtime.sessions, admin, "police", Role.BORDER_POLICE, "FRA", "FRA-BENCH")
    create_agreement(runtime.sessions, admin, "FRA", "SEN", ["face"], date(2020, 1, 1), None)
    runtime.engine.dispose()
    return police_key


def federate(fra: Path, sen: Path) -> None:
    """Node keys on both sides, each registered as the other's peer."""
    fra_key = cli(fra, "node", "init", "--country", "FRA", "--name", "FRA bench node")
    sen_key = cli(sen, "node", "init", "--country", "SEN", "--name", "SEN bench node")
    cli(fra, "peer", "add", "--country", "SEN", "--url", f"http://127.0.0.1:{PEER_PORT}", "--public-key", sen_key)
    cli(sen, "peer", "add", "--country", "FRA", "--url", f"http://127.0.0.1:{http_bench.PORT}", "--public-key", fra_key)


def measured(
    key: str, probes: Any, args: argparse.Namespace, profiled: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """One client, then ``args.clients``; the latter profiled in ``profiled`` (name → pid) when
    a profile folder is given."""
    one = asyncio.run(http_bench.load(key, probes, 1, args.seconds))
    if profiled is None or args.profile_dir is None:
        many = asyncio.run(http_bench.load(key, probes, args.clients, args.seconds))
    else:
        with profiling.record(profiled, args.profile_dir, args.seconds):
            many = asyncio.run(http_bench.load(key, probes, args.clients, args.seconds))
    return {"one": one, "many": many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--profile-dir", type=Path, help="py-spy both nodes during the many clients through the peer")
    args = parser.parse_args()
    exact_max = 200_000  # http_bench's default: exact search up to there, PQ fast-scan beyond
    node = {"max_batch_searches": "64", "exact_max_templates": str(exact_max)}
    unthrottled = {"federation_requests_per_minute": "100000000"}  # the throttle is not what is measured
    with scratch_folder() as folder:
        hub, fra, sen = (Path(folder) / name for name in ("hub", "fra", "sen"))
        hub_key, probes = http_bench.prepare(hub, args.size, 500)
        http_bench.prepare(sen, args.size, 500)  # the same seed: the same gallery and probes
        fra_key = requesting_node(fra)
        federate(fra, sen)

        process = http_bench.start_service(hub, 64, exact_max)
        try:
            local = measured(hub_key, probes, args)
        finally:
            process.terminate()
            process.wait(timeout=120)

        peer = start_service(PEER_PORT, data_dir=str(sen), **node, **unthrottled)
        requester = start_service(http_bench.PORT, data_dir=str(fra), **node, **unthrottled)
        try:
            remote = measured(fra_key, probes, args, {"fra": requester.pid, "sen": peer.pid})
        finally:
            for process in (requester, peer):
                process.terminate()
                process.wait(timeout=120)

    def latency(run: dict[str, Any]) -> str:
        return f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  errors {run['errors']}"

    def rate(run: dict[str, Any]) -> str:
        return f"{run['per_s']:.0f}/s  p50 {run['p50_ms']:.0f} ms  p99 {run['p99_ms']:.0f} ms  errors {run['errors']}"

    one_local, one_remote = local["one"], remote["one"]
    many_local, many_remote = local["many"], remote["many"]
    ratios = {
        "p50": one_remote["p50_ms"] / one_local["p50_ms"],
        "p99": one_remote["p99_ms"] / one_local["p99_ms"],
        "throughput": many_remote["per_s"] / many_local["per_s"],
    }
    print_table(
        f"FRA identification of SEN's gallery, {args.size:,} templates: through a SEN peer against a hub holding it",
        [
            ("hub (local gallery), one client", latency(one_local)),
            ("through the peer, one client", latency(one_remote)),
            ("  ratio p50, p99", f"{ratios['p50']:.2f}x  {ratios['p99']:.2f}x"),
            (f"hub (local gallery), {args.clients} clients", rate(many_local)),
            (f"through the peer, {args.clients} clients", rate(many_remote)),
            ("  ratio throughput", f"{ratios['throughput']:.2f}x"),
        ],
    )
    print_json(
        {
            "size": args.size,
            "clients": args.clients,
            "seconds": args.seconds,
            **ratios,
            **{"local": local, "remote": remote},
        }
    )
    if args.profile_dir is not None:
        profiling.print_summary(args.profile_dir)


if __name__ == "__main__":
    main()
