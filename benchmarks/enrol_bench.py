"""Bulk enrolment speed: records/s into SQLite and PostgreSQL, then the index build, through the
same code path as ``readmit enrol`` (streamed from .npy + CSV, one transaction per batch).

    python benchmarks/enrol_bench.py --size 1000000
    python benchmarks/enrol_bench.py --size 200000 --postgres-url postgresql+psycopg://u:p@127.0.0.1/postgres
(the PostgreSQL URL defaults to READMIT_TEST_POSTGRES_URL; a fresh database is created and dropped)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_audit_key, print_json, print_table, scratch_database, scratch_folder

from app.core.config import Settings
from app.galleries import enrolment
from app.galleries.service import create_gallery
from app.galleries.sources import read_paired
from app.principals.models import Role
from app.principals.service import create_principal
from app.runtime import Runtime
from matcher import Metric, TemplateFormat
from matcher.synthetic import make_synthetic_set


def write_source(folder: Path, size: int) -> tuple[Path, Path]:
    data = make_synthetic_set(size, 1, 1, 1, seed=4)
    templates, records = folder / "templates.npy", folder / "records.csv"
    np.save(templates, data.gallery)
    with open(records, "w") as out:
        out.write("reference_id,family_name\n")
        out.writelines(f"SEN-{i:09d},Name{i}\n" for i in range(size))
    return templates, records


def load(settings: Settings, templates: Path, records: Path, batch: int) -> dict[str, float]:
    ensure_audit_key(settings)
    runtime = Runtime.create(settings, offline=True)  # as readmit enrol's
    from app.db.migrate import upgrade_to_head

    upgrade_to_head(settings, runtime.engine)
    runtime.open_keyring()
    admin, _ = create_principal(runtime.sessions, None, "admin", Role.ADMIN)
    registry, _ = create_principal(runtime.sessions, admin, "registry", Role.REGISTRY, "SEN")
    fmt = TemplateFormat("synthetic-arcface", 512, Metric.COSINE)
    gallery_id = create_gallery(runtime.sessions, runtime.registry, admin, "SEN", "face", fmt).id
    started = time.perf_counter()
    limits = enrolment.EnrolmentLimits(max_records=batch, max_templates_per_record=settings.max_templates_per_record)
    summary = enrolment.load(runtime.sessions, registry.id, gallery_id, read_paired(templates, records, batch), limits)
    database_s = time.perf_counter() - started
    started = time.perf_counter()
    runtime.registry.open(runtime.gallery_source(gallery_id), runtime.stream_templates)
    index_s = time.perf_counter() - started
    runtime.engine.dispose()
    return {
        "records": summary.inserted,
        "database_s": database_s,
        "records_per_s": summary.inserted / database_s,
        "index_build_s": index_s,
        "overall_records_per_s": summary.inserted / (database_s + index_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--postgres-url", default=os.environ.get("READMIT_TEST_POSTGRES_URL"))
    parser.add_argument("--no-sqlite", action="store_true", help="measure PostgreSQL only")
    args = parser.parse_args()
    figures: dict[str, object] = {"size": args.size, "batch": args.batch}
    with scratch_folder() as folder:
        base = Path(folder)
        templates, records = write_source(base, args.size)
        if not args.no_sqlite:
            figures["sqlite"] = load(Settings(data_dir=base / "sqlite"), templates, records, args.batch)
        if args.postgres_url:
            with scratch_database(args.postgres_url) as url:
                figures["postgresql"] = load(
                    Settings(data_dir=base / "pg", database_url=url), templates, records, args.batch
                )
    rows = [
        (
            backend,
            f"{f['records_per_s']:,.0f} records/s into the database, index built in "  # type: ignore[index]
            f"{f['index_build_s']:.1f} s, {f['overall_records_per_s']:,.0f} records/s overall",
        )  # type: ignore[index]
        for backend, f in figures.items()
        if isinstance(f, dict)
    ]
    print_table(f"bulk enrolment of {args.size:,} records of one 512-d template", rows)
    print_json(figures)


if __name__ == "__main__":
    main()
