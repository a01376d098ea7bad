"""FAISS tuning measured on our machines: threads per search and the GEMM block size.

OpenMP's thread count is a per-thread setting: ``omp_set_num_threads`` in one Python thread does
not reach searches made from another, so it is set before every search, in the searching thread.
Measured on the 2-vCPU machines (DESIGN.md, benchmarks/matcher_bench.py): a single probe is
memory-bound and runs twice as fast on one thread; a batch of at least ``BLAS_BATCH`` probes
takes FAISS's GEMM path, which gains from every core (70 to 94 GFLOP/s from one to two threads).
"""

from __future__ import annotations

import os

import faiss

BLAS_BATCH = 20
"""FAISS's ``distance_compute_blas_threshold``: from this many probes a flat search uses GEMM."""


def use_threads_for(probe_count: int) -> None:
    """Set this thread's FAISS thread count for a search of ``probe_count`` probes."""
    faiss.omp_set_num_threads(1 if probe_count < BLAS_BATCH else (os.cpu_count() or 1))


# FAISS computes batched inner products in blocks of this many database rows (default 1024). On
# the development machine, 256 probes against 200k templates ran at 76 GFLOP/s with 1024-row
# blocks and 140 GFLOP/s with 4096 (numpy's GEMM: 185): larger blocks keep BLAS efficient.
faiss.cvar.distance_compute_blas_database_bs = 4096

