"""Deduplication benchmark: all pairs of a synthetic gallery with planted duplicates.

Prints the wall time of the tail calibration and of the scan, the scan's rate as a fraction of
the machine's float32 GEMM rate (measured with numpy in the same run), the recall of the planted
pairs, the false pairs found against the number the fitted tail expects, at the FMR that expects
one false pair in the whole gallery, and the peak resident memory; last, one JSON line.

    flock /tmp/readmit-bench.lock python benchmarks/dedup_bench.py                 # 100k x 512
    flock /tmp/readmit-bench.lock python benchmarks/dedup_bench.py --size 1000000
    flock /tmp/readmit-bench.lock python benchmarks/dedup_bench.py --method pq_shortlist
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_count, measure_gemm_rate, peak_rss_mb, print_json, print_table

from matcher import TemplateFormat
from matcher.dedup import ROW_BLOCK, BlockPlan, build_shortlist, calibrate, scan_block, shortlist_block
from matcher.synthetic import make_synthetic_set


def planted_gallery(size: int, twins: int, dimension: int, seed: int) -> tuple[np.ndarray, np.ndarray, set]:
    """``size`` templates, one per record: ``size - twins`` people, ``twins`` of them enrolled a
    second time (a fresh sample) under a new record id at the end."""
    people = size - twins
    data = make_synthetic_set(people, 1, mated_probes=twins, nonmated_probes=1, seed=seed)
    vectors = np.vstack([data.gallery, data.mated_probes])
    labels = np.arange(size, dtype=np.int64)
    planted = {(int(a), people + k) for k, a in enumerate(data.mated_ids)}
    return vectors, labels, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--twins", type=int, default=1000, help="people enrolled twice")
    parser.add_argument("--dimension", type=int, default=512)
    parser.add_argument("--block-rows", type=int, default=ROW_BLOCK)
    parser.add_argument("--method", choices=["exact", "pq_shortlist"], default="exact")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    gemm_rate = measure_gemm_rate()
    started = time.perf_counter()
    vectors, labels, planted = planted_gallery(args.size, args.twins, args.dimension, args.seed)
    generated_s = time.perf_counter() - started
    fmt = TemplateFormat("synthetic", args.dimension)
    n = vectors.shape[0]
    fmr = 2 / (n * (n - 1))  # one false pair expected in the whole gallery

    started = time.perf_counter()
    thresholds = calibrate(fmt, vectors, labels, fmr)
    calibration_s = time.perf_counter() - started

    plan = BlockPlan.of(labels, args.block_rows)
    shortlist_s = 0.0
    shortlist = None
    if args.method == "pq_shortlist":
        started = time.perf_counter()
        shortlist = build_shortlist(fmt, vectors)
        shortlist_s = time.perf_counter() - started
    found: dict[tuple[int, int], float] = {}
    flops = 0.0
    started = time.perf_counter()
    for block in range(plan.blocks):
        first, last = plan.rows(block)
        if shortlist is None:
            pairs = scan_block(fmt, vectors, labels, plan, block, thresholds.possible)
        else:
            pairs = shortlist_block(fmt, vectors, labels, plan, block, thresholds.possible, shortlist)
        flops += 2.0 * (last - first) * (n - first) * args.dimension
        found.update(
            zip(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True), pairs.scores.tolist(), strict=True)
        )
    scan_s = time.perf_counter() - started

    matches = {pair for pair, score in found.items() if score >= thresholds.match}
    recall = len(matches & planted) / len(planted)
    false_pairs = len(matches - planted)
    figures = {
        "size": n,
        "dimension": args.dimension,
        "method": args.method,
        "cpus": cpu_count(),
        "gemm_gflops": gemm_rate / 1e9,
        "generate_s": generated_s,
        "calibration_s": calibration_s,
        "shortlist_build_s": shortlist_s,
        "scan_s": scan_s,
        "scan_gflops": flops / scan_s / 1e9,
        "gemm_fraction": flops / scan_s / gemm_rate,
        "pairs_per_s": n * (n - 1) / 2 / scan_s,
        "target_fmr": fmr,
        "match_threshold": thresholds.match,
        "possible_threshold": thresholds.possible,
        "tail_shape": thresholds.tail.shape,
        "tail_outliers": thresholds.tail.outliers,
        "tail_sample_size": thresholds.tail.sample_size,
        "tail_excesses": thresholds.tail.excesses,
        "planted": len(planted),
        "recall_planted": recall,
        "false_pairs": false_pairs,
        "expected_false_pairs": thresholds.expected_false_pairs,
        "pairs_possible_band": len(found),
        "peak_rss_mb": peak_rss_mb(),
    }
    print_table(
        f"deduplication of {n:,} x {args.dimension} ({args.method}, {cpu_count()} CPUs)",
        [
            ("float32 GEMM rate (numpy)", f"{gemm_rate / 1e9:.1f} GFLOP/s"),
            (
                "tail calibration",
                f"{calibration_s:.1f} s, {thresholds.tail.excesses:,} excesses of {thresholds.tail.sample_size:.2g} "
                f"scores ({thresholds.tail.outliers} outliers kept out)",
            ),
            ("scan", f"{scan_s:.1f} s, {flops / scan_s / 1e9:.1f} GFLOP/s = {flops / scan_s / gemm_rate:.0%} of GEMM"),
            ("pairs compared", f"{n * (n - 1) / 2 / scan_s:.3g}/s"),
            ("threshold at FMR", f"{thresholds.match:.4f} at {fmr:.2g} (possible {thresholds.possible:.4f})"),
            ("planted pairs found", f"{recall:.1%} of {len(planted)}"),
            ("false pairs (match)", f"{false_pairs} found, {thresholds.expected_false_pairs:.2f} expected"),
            ("peak memory", f"{peak_rss_mb():,.0f} MB"),
        ],
    )
    print_json(figures)


if __name__ == "__main__":
    main()
