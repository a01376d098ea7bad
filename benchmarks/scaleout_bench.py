"""Scale-out benchmark: one gallery over 1, 2 and 4 Ray shards against the in-process index,
in the same run, on a local Ray instance.

For each layout: build time, single-probe latency (p50/p99), batched throughput, memory per
shard, and a check that the answers equal the in-process exact answers to the bit. Then the
scatter-gather overhead on a small gallery, where there is nothing to gain from shards.

    python benchmarks/scaleout_bench.py                 # 1M x 512 templates, minutes
    python benchmarks/scaleout_bench.py --size 100000   # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray
from common import percentiles_ms, print_json, print_table

from matcher import GalleryIndex, IndexKind, IndexPolicy, TemplateFormat
from matcher.sharded import ShardedGallery, ShardingPolicy, connect
from matcher.synthetic import make_synthetic_set
from matcher.tuning import restart_with_huge_pages

K = 30
BATCH = 64
CHUNK = 65_536
EXACT = IndexPolicy(forced_kind=IndexKind.EXACT)


def latencies(index, probes: np.ndarray) -> list[float]:  # type: ignore[no-untyped-def]
    index.search(probes[:1], K)  # warm
    out = []
    for probe in probes:
        started = time.perf_counter()
        index.search(probe[None, :], K)
        out.append(time.perf_counter() - started)
    return out


def throughput(index, probes: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for i in range(0, len(probes), BATCH):
        index.search(probes[i : i + BATCH], K)
    return len(probes) / (time.perf_counter() - started)


def build_sharded(shards: int, ids: np.ndarray, templates: np.ndarray, folder: Path) -> tuple[ShardedGallery, float]:
    sharding = ShardingPolicy(shard_count=shards, cpus_per_shard=2 / shards, max_concurrency=2)  # the 2 CPUs shared
    started = time.perf_counter()
    gallery = ShardedGallery(1, FORMAT, EXACT, sharding, folder / f"bench-{shards}.snapshot", refill=None)
    for i in range(0, len(ids), CHUNK):
        gallery.add(ids[i : i + CHUNK], templates[i : i + CHUNK])
    return gallery, time.perf_counter() - started


def same_answers(expected, got) -> bool:  # type: ignore[no-untyped-def]
    return bool(np.array_equal(expected.record_ids, got.record_ids) and np.array_equal(expected.scores, got.scores))


def measure(index, probes: np.ndarray, batch_probes: np.ndarray, reference) -> dict[str, float]:  # type: ignore[no-untyped-def]
    single = percentiles_ms(latencies(index, probes))
    return {
        **single,
        "probes_per_s": throughput(index, batch_probes),
        "identical": same_answers(reference, index.search(batch_probes[:BATCH], K)),
    }


FORMAT = TemplateFormat("synthetic-arcface", 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=40, help="single-probe searches per layout")
    parser.add_argument("--batch-probes", type=int, default=256, help="probes of the throughput run")
    parser.add_argument("--small", type=int, default=10_000, help="gallery size of the overhead check")
    args = parser.parse_args()
    restart_with_huge_pages()  # as the service runs (readmit serve)

    data = make_synthetic_set(args.size, samples_per_identity=1, mated_probes=args.probes, nonmated_probes=0, seed=5)
    ids, templates = data.gallery_ids.astype(np.int64) + 1, data.gallery
    rng = np.random.default_rng(1)
    probes = data.mated_probes
    batch_probes = rng.standard_normal((args.batch_probes, FORMAT.dimension)).astype(np.float32)
    connect("local", num_cpus=2)

    rows, figures = [], {"size": args.size, "cpus": 2}
    started = time.perf_counter()
    local = GalleryIndex(FORMAT, EXACT)
    for i in range(0, len(ids), CHUNK):
        local.add(ids[i : i + CHUNK], templates[i : i + CHUNK])
    local_build = time.perf_counter() - started
    reference = local.search(batch_probes[:BATCH], K)
    base = measure(local, probes, batch_probes, reference)
    figures["in_process"] = {**base, "build_s": local_build}
    rows.append(
        (
            "in-process",
            f"p50 {base['p50_ms']:.1f} ms  p99 {base['p99_ms']:.1f} ms  {base['probes_per_s']:.0f} probes/s (batches "
            f"of {BATCH})  build {local_build:.1f} s",
        )
    )

    with tempfile.TemporaryDirectory() as folder:
        for shards in (1, 2, 4):
            gallery, build = build_sharded(shards, ids, templates, Path(folder))
            try:
                got = measure(gallery, probes, batch_probes, reference)
                memory = [state.rss_mb for state in gallery.health()]
            finally:
                gallery.close()
            figures[f"shards_{shards}"] = {**got, "build_s": build, "shard_rss_mb": memory}
            rows.append(
                (
                    f"{shards} shard(s)",
                    f"p50 {got['p50_ms']:.1f} ms ({base['p50_ms'] / got['p50_ms']:.2f}x)  p99 {got['p99_ms']:.1f} ms  "
                    f"{got['probes_per_s']:.0f} probes/s ({got['probes_per_s'] / base['probes_per_s']:.2f}x)  "
                    f"build {build:.1f} s  shard RSS {', '.join(f'{m:.0f}' for m in memory)} MB  "
                    f"identical: {got['identical']}",
                )
            )
        del local

        small_ids, small = ids[: args.small], templates[: args.small]
        local_small = GalleryIndex(FORMAT, EXACT)
        local_small.add(small_ids, small)
        small_base = percentiles_ms(latencies(local_small, probes))
        overhead = {"in_process": small_base}
        for shards in (1, 2, 4):
            gallery, _ = build_sharded(shards, small_ids, small, Path(folder))
            try:
                overhead[f"shards_{shards}"] = percentiles_ms(latencies(gallery, probes))
            finally:
                gallery.close()
        figures["small_gallery"] = {"size": args.small, **overhead}
    rows.append(
        (
            f"{args.small:,} templates",
            "  ".join(f"{name}: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms" for name, v in overhead.items()),
        )
    )
    print_table(f"scale-out, {args.size:,} x {FORMAT.dimension} exact, local Ray on 2 CPUs", rows)
    print_json(figures)
    ray.shutdown()


if __name__ == "__main__":
    main()
