import json
import os
import subprocess
import sys
import threading
import time

import pytest

from matcher.tuning import (
    BLAS_PROBES,
    GEMM_DATABASE_ROWS,
    HUGE_PAGES_TUNABLE,
    TYPICAL_DIMENSION,
    restart_with_huge_pages,
    run_in_parallel,
    set_thread_budget,
    thread_budget,
)

FAISS_SETTINGS = """
import importlib, json, pkgutil, sys
import faiss
def settings():
    return [faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs]
defaults = settings()
import matcher
for module in pkgutil.iter_modules(matcher.__path__):  # the Ray modules too, where Ray is installed
    if module.name not in ("capacity", "shard", "sharded") or importlib.util.find_spec("ray"):
        importlib.import_module(f"matcher.{module.name}")
imported = settings()
matcher.GalleryIndex(matcher.TemplateFormat("synthetic", 64))
print(json.dumps({"defaults": defaults, "imported": imported, "with_an_index": settings()}))
"""


def test_importing_the_matcher_leaves_faiss_alone_and_an_index_tunes_it():
    output = subprocess.run([sys.executable, "-c", FAISS_SETTINGS], capture_output=True, text=True, timeout=120)
    assert output.returncode == 0, output.stderr
    seen = json.loads(output.stdout.splitlines()[-1])
    assert seen["imported"] == seen["defaults"]
    assert seen["with_an_index"] == [BLAS_PROBES * TYPICAL_DIMENSION, GEMM_DATABASE_ROWS]
    assert seen["with_an_index"] != seen["defaults"]


REPORT = (
    "from matcher.tuning import restart_with_huge_pages\n"
    "restart_with_huge_pages()\n"
    "import os\n"
    "print(os.getpid(), os.environ['GLIBC_TUNABLES'])\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
@pytest.mark.parametrize("existing", [None, "glibc.malloc.arena_max=2"])
def test_restart_with_huge_pages_keeps_the_process_and_other_tunables(existing):
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if existing:
        environment["GLIBC_TUNABLES"] = existing
    process = subprocess.Popen([sys.executable, "-c", REPORT], env=environment, stdout=subprocess.PIPE, text=True)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    pid, tunables = output.split()
    assert int(pid) == process.pid  # the same process, re-executed: a supervisor's pid stays right
    assert tunables.split(":") == [*([existing] if existing else []), HUGE_PAGES_TUNABLE]


def test_run_in_parallel_returns_results_in_order_and_uses_another_thread():
    seen: list[str] = []

    def task(value: int):
        def run() -> int:
            seen.append(threading.current_thread().name)
            time.sleep(0.02)
            return value

        return run

    budget = thread_budget()
    set_thread_budget(2)
    try:
        assert run_in_parallel([task(i) for i in range(5)]) == list(range(5))
    finally:
        set_thread_budget(budget)
    assert threading.current_thread().name in seen
    assert any(name.startswith("matcher") for name in seen)
    assert run_in_parallel([]) == [], "nothing to run (an empty gallery's snapshot): nothing run"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_a_start_goes_on_without_huge_pages_where_it_cannot_restart(monkeypatch, caplog):
    def refused(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(os, "execve", refused)
    restart_with_huge_pages()  # returns: the start goes on
    assert "without huge pages" in caplog.text
