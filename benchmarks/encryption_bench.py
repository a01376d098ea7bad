"""The cost of encryption at rest, measured with it off and on in one run: bulk enrolment (the
``readmit enrol`` path, into SQLite, and PostgreSQL when a server is given), the index rebuild
from the database, a snapshot load, and the service's start until /readyz (snapshot loaded).
With encryption on, two processes of one node then load the same snapshot one after the other,
as ``readmit serve --processes 2`` would: the first decrypts it into shared memory, the second
only maps it; their load times and memory (/proc/PID/smaps_rollup) are measured with the shared
copy and without (each process decrypting its own), beside two processes mapping the clear one.

    python benchmarks/encryption_bench.py --size 200000
    python benchmarks/encryption_bench.py --size 200000 --postgres-url postgresql+psycopg://u:p@127.0.0.1/postgres

Off and on are measured alternately, ``--rounds`` times each, and the best of each kept, so that
a neighbour's load on a shared machine hits both alike rather than one of them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_audit_key, print_json, print_table, scratch_database, start_service

from app.core.config import Settings
from app.db.migrate import upgrade_to_head
from app.galleries import enrolment
from app.galleries.service import create_gallery
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime
from matcher import IndexKind, Metric, TemplateFormat
from matcher.synthetic import make_synthetic_set

PORT = 18860
MODES = {"off": False, "on": True}


def enrol_and_build(settings: Settings, templates: np.ndarray, batch: int) -> dict[str, float]:
    """Bulk load the templates into a new gallery, then build its index and snapshot it."""
    ensure_audit_key(settings)
    runtime = Runtime.create(settings, offline=True)  # as readmit enrol's
    upgrade_to_head(settings, runtime.engine)
    runtime.open_keyring()
    admin, _ = create_principal(runtime.sessions, None, "admin", Role.ADMIN)
    registry, _ = create_principal(runtime.sessions, admin, "registry", Role.REGISTRY, "SEN")
    fmt = TemplateFormat("synthetic-arcface", templates.shape[1], Metric.COSINE)
    gallery_id = create_gallery(runtime.sessions, runtime.registry, admin, "SEN", "face", fmt).id
    size = len(templates)
    source = [
        enrolment.RecordBlock(start, [f"SEN-{i:09d}" for i in range(start, start + batch)], [{}] * batch, part)
        for start, part in ((s, templates[s : s + batch]) for s in range(0, size, batch))
    ]
    limits = enrolment.EnrolmentLimits(max_records=batch, max_templates_per_record=1)
    started = time.perf_counter()
    enrolment.load(runtime.sessions, registry.id, gallery_id, source, limits)
    database_s = time.perf_counter() - started
    started = time.perf_counter()
    runtime.open_index(gallery_id)  # no snapshot yet: rebuilt from the database, then snapshotted
    build_s = time.perf_counter() - started
    runtime.registry.close_all()
    runtime.release_plain_copies()
    runtime.engine.dispose()
    return {"records_per_s": size / database_s, "index_build_s": build_s}


def snapshot_load_s(settings: Settings, repeats: int = 3) -> tuple[float, float]:
    """The fastest of ``repeats`` loads of gallery 1's snapshot (from the page cache) into this
    process's memory, a sealed one decrypted every time (:func:`two_processes` shares it); and
    the fastest load followed by a first one-probe search, which is when the index is of use: a
    clear snapshot's mapping is lazy, and its first search pays the page faults a sealed one paid
    while it was decrypted."""
    runtime = Runtime.create(settings.model_copy(update={"share_decrypted_indexes": False}))
    runtime.open_keyring()
    source = runtime.gallery_source(1)
    path = runtime.registry.snapshot_path(1)
    key = runtime.keyring.snapshot_key(1)
    probe = np.random.default_rng(1).standard_normal((1, source.template_format.dimension)).astype(np.float32)
    best_load = best_searched = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        index = runtime.registry.backend.load(1, path, lambda: iter(()), key)
        loaded = time.perf_counter()
        index.search(probe, 10)
        searched = time.perf_counter()
        best_load, best_searched = min(best_load, loaded - started), min(best_searched, searched - started)
        assert index.template_count == source.template_count
        index.close()
    runtime.engine.dispose()
    return best_load, best_searched


def hold_index(settings: Settings, conn: Connection) -> None:
    """A process of the node: load gallery 1's snapshot, touch every row (an exact search
    reads them all), report the load time, and hold the index until told to stop."""
    runtime = Runtime.create(settings)
    runtime.open_keyring()
    path, key = runtime.registry.snapshot_path(1), runtime.keyring.snapshot_key(1)
    started = time.perf_counter()
    index = runtime.registry.backend.load(1, path, lambda: iter(()), key)
    load_s = time.perf_counter() - started
    assert index.kind is IndexKind.EXACT
    index.search(np.ones((1, index.format.dimension), np.float32), 1)
    conn.send(load_s)
    conn.recv()
    index.close()
    runtime.release_plain_copies()
    runtime.engine.dispose()


def memory_mb(pid: int) -> dict[str, float]:
    """Resident, proportional and shared memory of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "shared": fields["Shared_Clean"] + fields["Shared_Dirty"]}


def two_processes(settings: Settings, share: bool) -> dict[str, float]:
    """Two processes load gallery 1's snapshot one after the other and hold it: each one's load
    time, and their memory once both hold it."""
    context = multiprocessing.get_context("spawn")
    settings = settings.model_copy(update={"share_decrypted_indexes": share})
    holders, measured = [], {}
    try:
        for which in ("first", "second"):
            ours, theirs = context.Pipe()
            process = context.Process(target=hold_index, args=(settings, theirs))
            process.start()
            holders.append((which, process, ours))
            measured[f"{which}_load_s"] = ours.recv()
        for which, process, _ in holders:
            measured.update({f"{which}_{name}_mb": value for name, value in memory_mb(process.pid).items()})
    finally:
        for _, process, ours in holders:
            ours.send("stop")
            process.join(timeout=60)
    return measured


def service_start_s(settings: Settings, key_file: Path) -> float:
    """From ``readmit serve`` to /readyz answering 200, the index loaded from its snapshot."""
    started = time.perf_counter()
    process = start_service(
        PORT,
        settle=False,
        data_dir=str(settings.data_dir),
        encrypt_at_rest=str(settings.encrypt_at_rest).lower(),
        master_key_file=str(key_file),
    )
    ready_s = time.perf_counter() - started
    process.terminate()
    process.wait(timeout=120)
    return ready_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    templates = make_synthetic_set(args.size, 1, 1, 1, seed=4).gallery
    best: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    node_runs: dict[str, list[dict[str, float]]] = {}

    def keep(mode: str, name: str, value: float, lower_is_better: bool = True) -> None:
        old = best[mode].get(name)
        better = old is None or (value < old if lower_is_better else value > old)
        best[mode][name] = value if better else old  # type: ignore[assignment]

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        key_file = base / "master.key"
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else reversed(MODES):
                data_dir = base / f"{mode}-{round_}"
                settings = Settings(data_dir=data_dir, encrypt_at_rest=MODES[mode], master_key_file=key_file)
                built = enrol_and_build(settings, templates, args.batch)
                keep(mode, "sqlite_records_per_s", built["records_per_s"], lower_is_better=False)
                keep(mode, "index_build_s", built["index_build_s"])
                load_s, load_and_search_s = snapshot_load_s(settings)
                keep(mode, "snapshot_load_s", load_s)
                keep(mode, "snapshot_load_and_first_search_s", load_and_search_s)
                keep(mode, "service_start_s", service_start_s(settings, key_file))
                for share in (True, False) if MODES[mode] else (False,):
                    label = ("on, shared" if share else "on, private") if MODES[mode] else "off"
                    node = two_processes(settings, share)
                    node_runs.setdefault(label, []).append(node)
                if args.postgres_url:
                    with scratch_database(args.postgres_url) as url:
                        pg = Settings(
                            data_dir=base / f"pg-{mode}-{round_}",
                            database_url=url,
                            encrypt_at_rest=MODES[mode],
                            master_key_file=key_file,
                        )
                        built = enrol_and_build(pg, templates, args.batch)
                    keep(mode, "postgresql_records_per_s", built["records_per_s"], lower_is_better=False)

    off, on = best["off"], best["on"]
    rows = []
    for name in off:
        rate = name.endswith("per_s")
        cost = off[name] / on[name] if rate else on[name] / off[name]  # > 1: slower with encryption
        unit = "records/s" if rate else "s"
        rows.append((name, f"off {off[name]:,.3f} {unit}, on {on[name]:,.3f} {unit}: {cost:.2f}x the time"))
    print_table(f"encryption at rest, {args.size:,} records of one 512-d template, best of {args.rounds}", rows)
    node_rows = []
    for label, runs in node_runs.items():
        best_run = {name: min(run[name] for run in runs) for name in runs[0]}
        node_rows.append(
            (
                label,
                f"load {best_run['first_load_s']:.3f} s then {best_run['second_load_s']:.3f} s; "
                + "; ".join(
                    f"{which}: Rss {best_run[f'{which}_rss_mb']:,.0f} MB, Pss {best_run[f'{which}_pss_mb']:,.0f} MB, "
                    f"shared {best_run[f'{which}_shared_mb']:,.0f} MB"
                    for which in ("first", "second")
                ),
            )
        )
    print_table("two processes of one node load the same snapshot (best of each)", node_rows)
    print_json({"size": args.size, "batch": args.batch, "rounds": args.rounds, "off": off, "on": on, "node": node_runs})


if __name__ == "__main__":
    main()
