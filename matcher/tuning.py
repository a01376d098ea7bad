"""FAISS tuning measured on our machines: which exact-search path a batch takes, how many
threads it gets, and the GEMM block size.

faiss-cpu 1.15.1 takes its BLAS (GEMM) path when probes x dimension reaches
``distance_compute_blas_threshold`` (default 128,000: 250 probes of 512-d), and otherwise scans
the gallery once per probe. Measured at 200k x 512 (2 vCPUs): the scan costs 24 ms a probe
(linear: 8 probes 190 ms, 64 probes 1.5 s); the BLAS path costs 67 ms for 1 probe, 75 ms for
8 and 196 ms for 64 on one thread, and about half that on two. So single probes scan, on one
thread (memory-bound: a second thread made them 2x slower), and from ``BLAS_PROBES`` probes a
batch takes GEMM on every core. This is what makes micro-batching concurrent searches pay.

OpenMP's thread count is a per-thread setting: ``omp_set_num_threads`` in one Python thread does
not reach searches made from another, so it is set before every search, in the searching thread.
The exact-search switches are process-wide, and :func:`configure_faiss` sets them, once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import faiss

T = TypeVar("T")

BLAS_PROBES = 3
"""From this many probes of one call, exact search uses GEMM."""

TYPICAL_DIMENSION = 512
"""FAISS's switch counts probes x dimension; it is set for 512-d templates (face, finger)."""


_thread_budget = os.cpu_count() or 1
_interpreter_cores = 0


def set_thread_budget(threads: int) -> None:
    """Cap the threads a batch may use: a process that shares the machine with others (a shard
    actor given part of a node) must not spread OpenMP threads over every core, or they
    oversubscribe the cores and spin."""
    global _thread_budget
    _thread_budget = max(1, threads)


def keep_a_core_for_the_interpreter() -> None:
    """Batches (GEMM) leave one of the budget's cores to this process's Python threads; single
    probes still take every core. A service matches batches mostly under load, when admissions
    and results of other searches are Python work on another core at the same time, and a GEMM
    thread sharing its core with them holds back all the others: at 200k exact, 32 clients on
    2 vCPUs, batches on one thread took 85 ms against 118 ms on two, and the service answered
    113/s against 101/s. The price: a lone search of several probes on an idle service takes
    one core less than it could."""
    global _interpreter_cores
    _interpreter_cores = 1


def thread_budget() -> int:
    """The threads a search of this process may use (see :func:`set_thread_budget`)."""
    return _thread_budget


def use_threads_for(probe_count: int) -> None:
    """Set this thread's FAISS thread count for a search of ``probe_count`` probes."""
    faiss.omp_set_num_threads(1 if probe_count < BLAS_PROBES else max(1, _thread_budget - _interpreter_cores))


GEMM_DATABASE_ROWS = 4096
"""FAISS computes batched inner products in blocks of this many database rows (default 1024). On
the development machine, 256 probes against 200k templates ran at 76 GFLOP/s with 1024-row
blocks and 140 GFLOP/s with 4096 (numpy's GEMM: 185): larger blocks keep BLAS efficient."""

_faiss_configured = False


def configure_faiss() -> None:
    """Set FAISS's process-wide exact-search switches to the values above: GEMM from
    :data:`BLAS_PROBES` probes, in blocks of :data:`GEMM_DATABASE_ROWS` rows.

    Called when a :class:`~matcher.gallery.GalleryIndex` is made or loaded and when a shard actor
    starts, not at import: importing the library leaves a process's FAISS as it was. It acts once
    per process, so a value the process sets afterwards stays.
    """
    global _faiss_configured
    if _faiss_configured:
        return
    faiss.cvar.distance_compute_blas_threshold = BLAS_PROBES * TYPICAL_DIMENSION
    faiss.cvar.distance_compute_blas_database_bs = GEMM_DATABASE_ROWS
    _faiss_configured = True


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
"""glibc (2.35+) then asks for transparent huge pages on its large blocks. FAISS allocates its
code arrays with ``malloc``, which the kernel here backs with 4 KiB pages unless asked (numpy
asks for its own arrays); the PQ fast-scan of 1M codes, memory-bound, ran 10% faster on huge
pages (fewer TLB misses): 1.76 against 1.55 ms per 500k codes, one thread. Shard actors get it
through their runtime environment."""


def restart_with_huge_pages() -> None:
    """Re-execute this process, same pid and arguments, with :data:`HUGE_PAGES_TUNABLE` set,
    unless it already is: glibc reads its tunables only at start. Called first thing by the
    service's ``serve`` command and the benchmarks; a no-op off Linux (musl ignores it too).

    A speed-up must never stop a start: where the interpreter cannot be executed again (a
    launcher that could reach it and dropped the privilege to), this process goes on as it is.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or HUGE_PAGES_TUNABLE in tunables.split(":"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    environment = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES_TUNABLE]))}
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
    except OSError as error:
        logging.getLogger(__name__).warning("going on without huge pages: cannot restart (%s)", error)


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads for the pieces of one probe's search; each runs FAISS on one OpenMP thread."""
    return ThreadPoolExecutor(
        workers, thread_name_prefix="matcher", initializer=faiss.omp_set_num_threads, initargs=(1,)
    )


def run_in_parallel(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``tasks`` on the calling thread and ``thread_budget() - 1`` pool threads (FAISS
    releases the GIL), and return their results in order.

    A single probe is one core's work in FAISS; this is how it gets the others. Pool threads
    take tasks from the front, the calling thread from the back, taking back any task no pool
    thread has started yet: a pool thread the host schedules late delays nothing but the one
    task it is running.
    """
    if len(tasks) <= 1 or _thread_budget == 1:
        return [task() for task in tasks]
    pool = _pool(_thread_budget - 1)
    others = [pool.submit(task) for task in tasks[1:]]
    results: list[T | None] = [tasks[0](), *([None] * len(others))]
    for i in reversed(range(len(others))):
        if others[i].cancel():
            results[i + 1] = tasks[i + 1]()
    for i, future in enumerate(others):
        if not future.cancelled():
            results[i + 1] = future.result()
    return results  # type: ignore[return-value]
