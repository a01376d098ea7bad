"""Deadline misses under overload: earliest-deadline-first against first-in-first-out.

The same generated workload (arrival times, deadlines, probes) is fed to the service's own
Scheduler twice, once per policy, with the real matcher behind it (an exact gallery whose search
time sets the service rate). Arrivals come faster than the workers can serve them. Under both
policies a worker drops a search that can no longer finish before its deadline (it would be run
late, which the service never does) and counts it as missed; a search that finishes late anyway
is a miss too. Without that rule EDF degrades under overload (it spends the workers on searches
already doomed), which is the textbook domino effect.

    python benchmarks/deadline_bench.py                 # 100k-template gallery, under a minute
    python benchmarks/deadline_bench.py --overload 2 --searches 600 --urgent 0.3
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_json, print_table

from app.matching.scheduler import Scheduler
from matcher import GalleryIndex, IndexKind, IndexPolicy, TemplateFormat
from matcher.synthetic import make_synthetic_set
from matcher.tuning import restart_with_huge_pages


def run_policy(
    policy: str,
    index: GalleryIndex,
    probes: np.ndarray,
    arrivals: np.ndarray,
    slack: np.ndarray,
    workers: int,
    search_s: float,
) -> dict[str, float]:
    finished: dict[int, float] = {}
    expired: set[int] = set()
    lock = threading.Lock()
    start = time.monotonic()
    deadlines = start + arrivals + slack

    def run(ids: list[int]) -> None:
        for search_id in ids:
            if time.monotonic() + search_s >= deadlines[search_id]:
                with lock:
                    expired.add(search_id)
                continue
            index.search(probes[search_id : search_id + 1], k=30)
            with lock:
                finished[search_id] = time.monotonic()

    scheduler = Scheduler(run, workers=workers, max_batch=1, policy=policy)  # type: ignore[arg-type]
    scheduler.start()
    wall = datetime.now(UTC)
    for search_id, arrival in enumerate(arrivals):
        delay = start + arrival - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        deadline = wall + timedelta(seconds=float(arrival + slack[search_id]))
        scheduler.submit(search_id, deadline, (1,))
    for search_id in range(len(arrivals)):
        scheduler.wait(search_id, 120)
    scheduler.stop()
    late = sum(1 for i, t in finished.items() if t > deadlines[i])
    misses = len(expired) + late
    return {
        "searches": len(arrivals),
        "expired_unrun": len(expired),
        "finished_late": late,
        "miss_rate": misses / len(arrivals),
        "wall_s": time.monotonic() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="templates in the gallery")
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--overload", type=float, default=2.0, help="arrival rate / service rate in the burst")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--urgent", type=float, default=0.2, help="fraction of searches close to their deadline")
    args = parser.parse_args()
    restart_with_huge_pages()  # as the service runs (readmit serve)

    data = make_synthetic_set(args.size, 1, 10, args.searches, seed=3)
    index = GalleryIndex(TemplateFormat("synthetic-arcface", 512), IndexPolicy(forced_kind=IndexKind.EXACT))
    index.add(data.gallery_ids, data.gallery)
    probes = data.nonmated_probes
    index.search(probes[:1], k=30)
    samples = []
    for probe in probes[:20]:
        t = time.perf_counter()
        index.search(probe[None, :], k=30)
        samples.append(time.perf_counter() - t)
    service_s = float(np.median(samples)) / args.workers  # the workers' combined time per search
    rng = np.random.default_rng(11)
    gaps = rng.exponential(service_s / args.overload, args.searches)
    arrivals = np.cumsum(gaps) - gaps[0]
    # A burst (arrivals faster than service) of mixed cases, scaled down from days to the
    # search time: a fraction close to their detention deadline (slack 5 to 60 service times)
    # among cases with weeks left (slack from 1.2 to 3 times the whole burst, so they can wait).
    burst = arrivals[-1]
    urgent = rng.random(args.searches) < args.urgent
    slack = np.where(
        urgent, rng.uniform(5, 60, args.searches) * service_s, rng.uniform(1.2, 3.0, args.searches) * burst
    )
    figures: dict[str, object] = {
        "size": args.size,
        "overload": args.overload,
        "urgent": args.urgent,
        "service_ms": service_s * 1000,
    }
    for policy in ("fifo", "edf"):
        figures[policy] = run_policy(policy, index, probes, arrivals, slack, args.workers, service_s * args.workers)
    figures["misses_avoided_by_edf"] = figures["fifo"]["miss_rate"] - figures["edf"]["miss_rate"]  # type: ignore[index]
    print_table(
        "deadline misses under overload",
        [
            ("gallery", f"{args.size:,} templates, exact; {service_s * 1000:.1f} ms of worker time per search"),
            (
                "workload",
                f"a burst of {args.searches} searches at {args.overload}x capacity, "
                f"{args.urgent:.0%} close to their deadline",
            ),
            ("FIFO miss rate", f"{figures['fifo']['miss_rate']:.1%}"),  # type: ignore[index]
            ("EDF miss rate", f"{figures['edf']['miss_rate']:.1%}"),  # type: ignore[index]
        ],
    )
    print_json(figures)


if __name__ == "__main__":
    main()
