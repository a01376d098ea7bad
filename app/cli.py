"""The ``readmit`` command line: serve, database, keys, bulk enrolment, indexes, audit.

Every command exits non-zero with a one-line reason on failure.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from app.core.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.core.datalock import DataDirLock
    from app.db.session import Sessions
    from app.runtime import Runtime

cli = typer.Typer(
    help="readmit: biometric identification matching service", no_args_is_help=True, pretty_exceptions_enable=False
)
db_cli = typer.Typer(help="Database schema", no_args_is_help=True)
admin_cli = typer.Typer(help="Principals and keys", no_args_is_help=True)
index_cli = typer.Typer(help="Matcher indexes (run with the service stopped)", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit trail", no_args_is_help=True)
keys_cli = typer.Typer(help="Master key of encryption at rest", no_args_is_help=True)
node_cli = typer.Typer(help="This node's identity in a federation", no_args_is_help=True)
peer_cli = typer.Typer(help="Peer nodes this node trusts", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(admin_cli, name="admin")
cli.add_typer(index_cli, name="index")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(node_cli, name="node")
cli.add_typer(peer_cli, name="peer")


def fail(message: str) -> NoReturn:
    typer.echo(f"readmit: {message}", err=True)
    raise typer.Exit(code=1)


@contextmanager
def reading(settings: Settings) -> Iterator[Sessions]:
    """Sessions of a read-only engine, disposed afterwards: a command that reads for long (a
    chain, an export) beside a running service must not hold SQLite's writers' turn."""
    from app.db.session import make_engine, make_session_factory

    engine = make_engine(settings.sqlalchemy_url, read_only=True)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """Engine with the schema at head, disposed afterwards."""
    from app.db.migrate import upgrade_to_head
    from app.db.session import make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade_to_head(settings, engine)
        yield engine
    except Exception as error:  # one line for the operator, not a traceback
        fail(f"{type(error).__name__}: {error}")
    finally:
        engine.dispose()


@contextmanager
def offline_runtime(settings: Settings) -> Iterator[Runtime]:
    """The service's runtime without HTTP, holding the data folder's lock."""
    from app.core.datalock import DataDirLock
    from app.core.errors import DomainError, Unavailable
    from app.db.migrate import upgrade_to_head
    from app.runtime import Runtime

    runtime = Runtime.create(settings, offline=True)
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except Unavailable as error:
        fail(f"{error.message}: stop the service first")
    try:
        upgrade_to_head(settings, runtime.engine)
        runtime.open_keyring()
        yield runtime
    except DomainError as error:  # a wrong master key, shards_unplaceable: one line, not a traceback
        fail(error.message)
    finally:
        runtime.release_plain_copies()
        runtime.engine.dispose()
        lock.release()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    workers: Annotated[
        int | None, typer.Option(min=1, help="threads running searches (default READMIT_SEARCH_WORKERS, 2)")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="service processes behind the port (default READMIT_PROCESSES, 1; >1: PostgreSQL)"),
    ] = None,
) -> None:
    """Start the service: migrations applied, indexes loaded from snapshots or rebuilt, JSON logs
    on standard output. With ``--processes N`` (PostgreSQL only) N processes serve every route
    behind the port, each with its matcher indexes mapped from the same snapshots and kept current
    by the database's change feed; a process that dies is replaced.

    Example: readmit serve --host 0.0.0.0 --port 8000 --processes 2
    """
    import os

    import uvicorn

    from app.audit.exceptions import SigningKeyMissing
    from app.audit.keys import signing_key_at_start
    from app.observability.logging import configure_logging, logging_config
    from matcher.tuning import restart_with_huge_pages

    restart_with_huge_pages()
    if workers is not None:
        os.environ["READMIT_SEARCH_WORKERS"] = str(workers)
    if processes is not None:
        os.environ["READMIT_PROCESSES"] = str(processes)
    get_settings.cache_clear()
    settings = get_settings()
    supervisor = supervise(settings) if settings.processes > 1 else None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if supervisor is None and settings.background_process:
        share_metrics(settings)  # with the child that runs the background passes (app/passes.py)
    try:
        created = signing_key_at_start(settings.audit_key_path, settings.audit_origin, settings.new_embedded_install)
    except SigningKeyMissing as error:
        fail(str(error))
    if created is not None:
        typer.echo(
            f"readmit: a new installation: audit log signing key written to {settings.audit_key_path} (mode 0600); "
            f"publish its verifier key to every party that checks the log:\n{created}",
            err=True,
        )
    configure_logging(log_level.upper())
    typer.echo(f"readmit: data in {settings.data_dir.resolve()}, http://{host}:{port} (API docs at /docs)", err=True)
    from app.main import STARTUP_REFUSED, refusal_path  # after the restart above: the app's imports are heavy

    refusal = refusal_path(settings.data_dir)
    refusal.unlink(missing_ok=True)  # an earlier run's, whose supervisor was killed
    try:
        uvicorn.run(
            "app.main:serving_app",
            factory=True,
            host=host,
            port=port,
            log_config=logging_config(log_level.upper()),  # in each process: those of --processes too
            access_log=False,
            log_level=log_level,
            workers=settings.processes if supervisor is not None else None,
        )
    finally:
        if supervisor is not None:
            supervisor.release()
    if refusal.exists():
        reason = refusal.read_text()
        refusal.unlink()
        typer.echo(f"readmit: cannot start: {reason}", err=True)
        raise typer.Exit(code=STARTUP_REFUSED)


def supervise(settings: Settings) -> DataDirLock:
    """Become the supervisor of several service processes: hold the data folder's lock for
    them, and give them a folder for their merged metrics. Refused where processes could not
    share the work: SQLite has one writer, serialised inside one process (app/db/session.py), and
    the Ray backend's shard actors belong to the process that created them."""
    import os

    from app.core.datalock import SUPERVISOR_ENV, DataDirLock
    from app.core.errors import Unavailable

    if settings.database_url is None or settings.database_url.startswith("sqlite"):
        fail("several processes need PostgreSQL (READMIT_DATABASE_URL): SQLite is served by one process")
    if settings.matcher_backend == "ray":
        fail("several processes need the local matcher backend: Ray shard actors belong to one service process")
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except Unavailable as error:
        fail(error.message)
    share_metrics(settings)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    return lock


def share_metrics(settings: Settings) -> None:
    """A folder where the server's processes write their metrics, for a scrape to merge
    (app/observability/metrics.py), named by this process. Set before anything imports
    prometheus_client, which chooses where values live at import. Folders of servers no longer
    running are removed; a running one's (a second server refused its data folder) is left."""
    import os
    import shutil

    from app.core.processes import alive

    metrics_dir = settings.data_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for path in metrics_dir.iterdir():
        if not (path.name.isdigit() and alive(int(path.name))):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    own = metrics_dir / str(os.getpid())
    own.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(own.resolve())


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration. Example: readmit db upgrade"""
    with database(get_settings()):
        pass
    typer.echo("database at head")


@admin_cli.command("create-key")
def create_key(name: Annotated[str, typer.Option(help="who holds the key")]) -> None:
    """Create an admin principal and print its API key once.

    Example: readmit admin create-key --name "operator on duty"
    """
    from app.db.session import make_session_factory
    from app.principals.models import Role
    from app.principals.service import create_principal

    with database(get_settings()) as engine:
        principal, key = create_principal(make_session_factory(engine), None, name, Role.ADMIN)
        principal_id = principal.id
    typer.echo(f"admin principal {principal_id} created; its API key (shown once):", err=True)
    typer.echo(key)


@keys_cli.command("generate")
def keys_generate(
    file: Annotated[Path | None, typer.Option(help="where to write it (default: READMIT_MASTER_KEY_FILE's)")] = None,
) -> None:
    """Write a new master key file (mode 0600), never over an existing one. The service makes
    one itself at its first start on an empty database; this is for setting one up beforehand,
    or for the key ``readmit keys rotate --new-key-file`` moves to.

    Example: readmit keys generate --file /etc/readmit/master.key
    """
    from app.encryption.master import write_key_file

    path = file or get_settings().master_key_path
    try:
        master = write_key_file(path)
    except FileExistsError:
        fail(f"{path} exists: a master key is never overwritten")
    typer.echo(f"master key {master.key_id} written to {path}")


@keys_cli.command("rotate")
def keys_rotate(
    new_key_file: Annotated[
        Path | None, typer.Option(help="the new master key (made there if missing); default: replace the key file")
    ] = None,
) -> None:
    """Re-wrap every data key with a new master key, with the service stopped; templates,
    probes and snapshots are not re-encrypted. Without --new-key-file, a new key is written
    beside the key file as <file>.new, the data keys re-wrapped, then <file>.new renamed over
    the key file (after a crash in between, the start names both keys: keep <file>.new).

    Example: readmit keys rotate
    """
    import os

    from app.encryption.master import read_key_file, write_key_file
    from app.encryption.service import rotate

    settings = get_settings()
    if new_key_file is None and settings.master_key is not None:
        fail("the master key comes from READMIT_MASTER_KEY: give --new-key-file and then configure that key")
    target = new_key_file or settings.master_key_path.with_name(settings.master_key_path.name + ".new")
    with offline_runtime(settings) as runtime:
        new_master = read_key_file(target) if target.exists() else write_key_file(target)
        old_id = runtime.keyring.master.key_id if runtime.keyring.master else "none"
        count = rotate(runtime.sessions, runtime.keyring, new_master)
    if new_key_file is None:
        os.replace(target, settings.master_key_path)
        target = settings.master_key_path
    typer.echo(f"{count} data keys re-wrapped: master key {old_id} -> {new_master.key_id} ({target})")


@keys_cli.command("status")
def keys_status() -> None:
    """The configured master key and, for each data key, the master key that wraps it (with
    the service stopped: it opens the data folder as the service does).

    Example: readmit keys status
    """
    from app.encryption.service import data_keys

    with offline_runtime(get_settings()) as runtime:
        master = runtime.keyring.master
        typer.echo(f"master key: {master.key_id if master else 'none (encryption at rest is off)'}")
        for key in data_keys(runtime.sessions):
            typer.echo(f"{key.scope}\twrapped by {key.master_key_id} at {key.wrapped_at:%Y-%m-%dT%H:%M:%SZ}")


@cli.command()
def enrol(
    gallery: Annotated[int, typer.Option(help="gallery id")],
    as_principal: Annotated[int, typer.Option("--as", help="id of a registry principal of the gallery's country")],
    templates: Annotated[Path | None, typer.Option(help=".npy/.npz of (n, d) or (n, samples, d) float32")] = None,
    records: Annotated[Path | None, typer.Option(help="CSV (reference_id + attribute columns) or JSON Lines")] = None,
    jsonl: Annotated[
        Path | None, typer.Option(help="JSON Lines with inline templates (and optional qualities) instead")
    ] = None,
    qualities: Annotated[
        Path | None,
        typer.Option(help=".npy of the templates' qualities 0-100, (n,) or (n, samples), NaN where unknown"),
    ] = None,
    batch: Annotated[int, typer.Option(help="records per transaction")] = 5000,
    report: Annotated[Path, typer.Option(help="where rejected records and the summary go")] = Path(
        "enrol-report.jsonl"
    ),
) -> None:
    """Bulk-load a gallery with the service stopped: streaming, one transaction per batch,
    resumable and idempotent (a rerun skips what is already there unchanged). The index is
    rebuilt and snapshotted at the end, so the service starts at once.

    Example: readmit enrol --gallery 1 --as 2 --templates faces.npy --records people.csv
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from app.core.errors import DomainError
    from app.galleries import enrolment
    from app.galleries.sources import read_inline, read_paired

    settings = get_settings()
    source: Iterable[enrolment.Batch]
    try:
        if jsonl is not None and qualities is not None:
            fail("--qualities goes with --templates; JSON Lines carry their qualities inline")
        elif jsonl is not None:
            source, total = read_inline(jsonl, batch), _count_rows(jsonl)
        elif templates is not None and records is not None:
            source, total = read_paired(templates, records, batch, qualities), _count_rows(records)
        else:
            fail("give --templates and --records, or --jsonl")
    except (OSError, ValueError) as error:
        fail(str(error))
    limits = enrolment.EnrolmentLimits(batch, settings.max_templates_per_record, settings.min_enrolment_quality)
    with offline_runtime(settings) as runtime:
        started = time.perf_counter()
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[rate]:,.0f} records/s"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task("enrolling", total=total, rate=0.0)

            def advance(outcome: enrolment.EnrolmentOutcome) -> None:
                elapsed = max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=outcome.processed, rate=outcome.processed / elapsed)

            try:
                summary = enrolment.load(runtime.sessions, as_principal, gallery, source, limits, advance)
            except DomainError as error:
                fail(f"{error.message} (principal {as_principal} must be a registry officer of the gallery's country)")
            except ValueError as error:
                fail(str(error))
        runtime.open_index(gallery)
    elapsed = time.perf_counter() - started
    with open(report, "w", encoding="utf-8") as out:
        for rejected in summary.rejected:
            out.write(json.dumps(rejected.__dict__) + "\n")
        out.write(
            json.dumps(
                {
                    "summary": {
                        "inserted": summary.inserted,
                        "updated": summary.updated,
                        "unchanged": summary.unchanged,
                        "rejected": len(summary.rejected),
                        "seconds": round(elapsed, 1),
                    }
                }
            )
            + "\n"
        )
    typer.echo(
        f"inserted {summary.inserted}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"rejected {len(summary.rejected)} in {elapsed:.1f} s; report in {report}"
    )


def _count_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines


@cli.command()
def dedup(
    gallery: Annotated[int, typer.Option(help="gallery id")],
    out: Annotated[Path, typer.Option(help="JSON Lines of the pairs, then a summary line")],
    target_fmr: Annotated[
        float | None, typer.Option(help="FMR of the match band (default: one false pair expected in the gallery)")
    ] = None,
    block_rows: Annotated[
        int, typer.Option(min=1, help="rows per block: the unit of progress and of resumption")
    ] = 1024,
    method: Annotated[str | None, typer.Option(help="exact or pq_shortlist (default: by size)")] = None,
) -> None:
    """Find the records of a gallery enrolled more than once, with the service stopped: the pairs
    above the threshold calibrated at --target-fmr on the gallery's own non-mated tail, and their
    clusters. Resumable: interrupted, the same command goes on from its last block (state in
    <out>.state) and writes the pairs a run never interrupted would have.

    Example: readmit dedup --gallery 1 --target-fmr 1e-9 --out pairs.jsonl
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from app.audit.actions import Action
    from app.deduplication.files import FileLedger
    from app.deduplication.service import audit_offline_run
    from app.deduplication.workflow import deduplicate, read_gallery
    from matcher.dedup import BlockPlan

    if method not in (None, "exact", "pq_shortlist"):
        fail("--method is exact or pq_shortlist")
    with offline_runtime(get_settings()) as runtime:
        if gallery not in runtime.gallery_ids():
            fail(f"no gallery {gallery}")
        started = time.perf_counter()
        templates = read_gallery(runtime.read_sessions, gallery)
        run = {"gallery_id": gallery, "target_fmr": target_fmr, "block_rows": block_rows, "method": method}
        ledger = FileLedger(out, run)
        audit_offline_run(runtime.sessions, gallery, Action.DEDUPLICATION_START, run)
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} blocks"),
            TextColumn("{task.fields[work]:.1%} of the comparisons"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, transient=False) as progress:
            blocks = BlockPlan.of(templates.labels, block_rows).blocks
            task = progress.add_task("deduplicating", total=blocks, work=0.0)

            def advance(blocks_done: int, plan: BlockPlan) -> None:
                progress.update(task, completed=blocks_done, work=plan.work_done(blocks_done))

            deduplicate(templates, target_fmr, ledger, block_rows, method, on_block=advance)  # type: ignore[arg-type]
        summary = ledger.finish()
        audit_offline_run(
            runtime.sessions, gallery, Action.DEDUPLICATION_FINISH, {k: summary[k] for k in ("pairs", "threshold")}
        )
    typer.echo(
        f"{summary['pairs']} pairs ({summary['matches']} match) in {len(summary['clusters'])} clusters at threshold "
        f"{summary['threshold']:.4f} (FMR {summary['target_fmr']:.2g}, {summary['expected_false_pairs']:.2g} false "
        f"pairs expected), {time.perf_counter() - started:.1f} s; in {out}"
    )


@index_cli.command("rebuild")
def index_rebuild(
    gallery: Annotated[int | None, typer.Option(help="one gallery (default: all)")] = None,
    kind: Annotated[str | None, typer.Option(help="pin exact or pq_fastscan (default: by size)")] = None,
) -> None:
    """Rebuild indexes from the database and snapshot them. Example: readmit index rebuild --gallery 1"""
    from matcher import IndexKind

    with offline_runtime(get_settings()) as runtime:
        for gallery_id in _gallery_ids(runtime, gallery):
            started = time.perf_counter()
            index = runtime.rebuild_index(gallery_id, IndexKind(kind) if kind else None)
            typer.echo(
                f"gallery {gallery_id}: {index.template_count} templates, {index.kind.value}, "
                f"{time.perf_counter() - started:.1f} s"
            )


@index_cli.command("snapshot")
def index_snapshot(gallery: Annotated[int | None, typer.Option(help="one gallery (default: all)")] = None) -> None:
    """Make every snapshot current: load it if it matches the database, else rebuild and save it.

    Example: readmit index snapshot
    """
    with offline_runtime(get_settings()) as runtime:
        for gallery_id in _gallery_ids(runtime, gallery):
            how = runtime.open_index(gallery_id)
            typer.echo(f"gallery {gallery_id}: {how}")


@index_cli.command("shards")
def index_shards() -> None:
    """Health and size of every shard actor of the Ray backend, read from the cluster at
    READMIT_RAY_ADDRESS (the service may be running). Example: READMIT_RAY_ADDRESS=auto readmit index shards"""
    settings = get_settings()
    try:
        from matcher import sharded
    except ImportError:
        fail("the Ray backend is not installed: pip install 'readmit[ray]'")
    if settings.ray_address == "local":
        fail("READMIT_RAY_ADDRESS must name a running cluster (auto or ray://host:port), not local")
    sharded.connect(settings.ray_address)
    states = sharded.cluster_shards()
    if not states:
        typer.echo("no readmit shards in this cluster")
    for state in states:
        health = "up" if state.available else "DOWN"
        typer.echo(
            f"{state.name}: {health}, {state.templates} templates, {state.records} records, {state.kind}, "
            f"change {state.change_seq}, {state.rss_mb:.0f} MB resident, pid {state.pid} on node {state.node[:12]}"
        )
    if not all(state.available for state in states):
        raise typer.Exit(code=1)


def _gallery_ids(runtime: Runtime, gallery: int | None) -> list[int]:
    ids = runtime.gallery_ids()
    if gallery is not None and gallery not in ids:
        fail(f"no gallery {gallery}")
    return [gallery] if gallery is not None else ids


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the whole hash chain; exit 1 and name the first bad event if it is broken.

    Example: readmit audit verify
    """
    from app.audit.service import check_chain
    from app.db.session import make_session_factory

    with database(get_settings()) as engine, reading(get_settings()) as read_sessions:
        result = check_chain(make_session_factory(engine), read_sessions)
    if not result.ok:
        fail(f"audit chain broken at event {result.first_bad_seq} ({result.events_checked} events verified before)")
    typer.echo(f"audit chain intact: {result.events_checked} events")


@audit_cli.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="JSON Lines file to write ('-' for standard output)")] = Path("-"),
    after: Annotated[int, typer.Option(help="only events with seq greater than this")] = 0,
) -> None:
    """Export events with their chain (seq, prev_hash, hash) to verify elsewhere: each hash is
    SHA-256 over the event's canonical JSON (see README, "Audit trail").

    Example: readmit audit export --out audit.jsonl
    """
    from app.audit.schemas import AuditEventOut
    from app.audit.service import export_events
    from app.db.session import make_session_factory

    destination = nullcontext(sys.stdout) if str(out) == "-" else open(out, "w", encoding="utf-8")  # noqa: SIM115 - entered just below
    with database(get_settings()) as engine, reading(get_settings()) as read_sessions, destination as handle:
        count = 0
        for event in export_events(make_session_factory(engine), read_sessions, after):
            handle.write(AuditEventOut.model_validate(event, from_attributes=True).model_dump_json() + "\n")
            count += 1
    typer.echo(f"exported {count} events", err=True)


@audit_cli.command("keygen")
def audit_keygen(
    name: Annotated[str, typer.Option(help="the log's name and checkpoint origin, a schema-less URL")],
    out: Annotated[
        Path | None,
        typer.Option(help="private key file (default READMIT_AUDIT_KEY_FILE, or audit-log.key in the data folder)"),
    ] = None,
) -> None:
    """Create the audit log's Ed25519 signing key (once: the service refuses to start without
    it, and never overwrites it). Prints the verifier key to publish to every party.

    Example: readmit audit keygen --name hub.example.org/readmit-audit
    """
    from app.audit.keys import create_signing_key
    from app.audit.notes import NoteError

    path = out or get_settings().audit_key_path
    try:
        verifier = create_signing_key(path, name)
    except (FileExistsError, NoteError) as error:
        fail(str(error))
    typer.echo(f"signing key written to {path} (mode 0600); verifier key:", err=True)
    typer.echo(str(verifier))


@audit_cli.command("verify-remote")
def audit_verify_remote(
    url: Annotated[str, typer.Option(help="the service, e.g. https://hub.example.org")],
    key: Annotated[str, typer.Option(help="the log's verifier key (name+keyid+base64), as published")],
    state: Annotated[Path, typer.Option(help="JSON file holding the last checkpoint accepted (created if absent)")],
    api_key: Annotated[
        str, typer.Option(envvar="READMIT_API_KEY", help="an auditor's API key (or the READMIT_API_KEY variable)")
    ],
    whole_log: Annotated[
        bool, typer.Option(help="the key sees the whole log (an auditor without a country): every seq must be listed")
    ] = False,
) -> None:
    """Check the log from outside: the latest checkpoint's signature, its consistency with the
    checkpoint in STATE, and the inclusion of every event this key may see up to it; then
    store the new checkpoint in STATE. Exits 1 with the reason when any check fails, 2 when the
    service could not be asked (nothing proven either way; STATE kept).

    Example: readmit audit verify-remote --url https://hub.example.org --key "$VKEY" --state sen.json
    """
    import httpx

    from app.audit.notes import NoteError, Verifier
    from app.audit.remote import CannotVerify, VerificationFailed, verify_remote

    try:
        verifier = Verifier.parse(key)
    except NoteError as error:
        fail(str(error))
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            outcome = verify_remote(client, verifier, state, whole_log)
    except VerificationFailed as error:
        fail(f"audit log verification failed: {error}")
    except (CannotVerify, httpx.HTTPError) as error:  # nothing proven either way: another exit code
        typer.echo(f"readmit: could not verify the audit log: {error}", err=True)
        raise typer.Exit(code=2) from None
    since = "first checkpoint stored" if outcome.previous_size is None else f"consistent with {outcome.previous_size}"
    typer.echo(
        f"audit log verified: tree size {outcome.checkpoint.size} ({since}), "
        f"{outcome.events_checked} events included; checkpoint stored in {state}"
    )


@node_cli.command("init")
def node_init(
    country: Annotated[str, typer.Option(help="the country this node answers for (ISO 3166-1 alpha-3)")],
    name: Annotated[str, typer.Option(help="the node's name, as its peers see it")],
) -> None:
    """Create the node's Ed25519 key pair (READMIT_NODE_KEY_FILE, or node.key in the data folder;
    mode 0600, outside the database; never overwritten) and print its public key, which each
    peer's operator registers with ``readmit peer add``.

    Example: readmit node init --country FRA --name "France, DCPAF node"
    """
    from app.core.errors import InvalidCountry
    from app.federation.exceptions import NodeKeyInvalid
    from app.federation.node import create_node

    path = get_settings().node_key_path
    try:
        node = create_node(path, country, name)
    except (FileExistsError, InvalidCountry, NodeKeyInvalid) as error:
        fail(str(error))
    typer.echo(f"node {node.country} ({node.name}) key written to {path} (mode 0600); its public key:", err=True)
    typer.echo(node.public_key_b64)


@peer_cli.command("add")
def peer_add(
    country: Annotated[str, typer.Option(help="the only country the peer is trusted for")],
    url: Annotated[str, typer.Option(help="the peer's base URL, e.g. https://readmit.example.sn")],
    public_key: Annotated[str, typer.Option(help="the peer's public key, as its `readmit node init` printed it")],
) -> None:
    """Trust a peer node for one country. Example: readmit peer add --country SEN --url https://… --public-key …"""
    from app.core.errors import DomainError
    from app.db.session import make_session_factory
    from app.federation.node import load_node
    from app.federation.peers import add_peer

    settings = get_settings()
    with database(settings) as engine:
        try:
            peer = add_peer(
                make_session_factory(engine), None, load_node(settings.node_key_path), country, url, public_key
            )
        except DomainError as error:
            fail(error.message)
    typer.echo(f"peer {peer.id}: {peer.country} at {peer.url}, keyid {peer.key_id}")


@peer_cli.command("list")
def peer_list() -> None:
    """The peers trusted now. Example: readmit peer list"""
    from app.db.session import make_session_factory
    from app.federation.peers import list_peers

    with database(get_settings()) as engine:
        for peer in list_peers(make_session_factory(engine)):
            typer.echo(f"{peer.id}\t{peer.country}\t{peer.url}\t{peer.key_id}")


@peer_cli.command("remove")
def peer_remove(peer_id: Annotated[int, typer.Argument(help="the peer's id (readmit peer list)")]) -> None:
    """Stop trusting a peer (with the service stopped, or within READMIT_KEY_CACHE_S of a running
    one). Example: readmit peer remove 2"""
    from app.core.errors import DomainError
    from app.db.session import make_session_factory
    from app.federation.peers import remove_peer

    with database(get_settings()) as engine:
        try:
            remove_peer(make_session_factory(engine), None, peer_id)
        except DomainError as error:
            fail(error.message)
    typer.echo(f"peer {peer_id} removed")


@cli.command(hidden=True)
def passes(log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info") -> None:
    """The background passes of a serving process, which starts this as its child (app/passes.py)."""
    from app.observability.logging import configure_logging
    from app.passes import run_child

    configure_logging(log_level.upper())
    run_child(get_settings())


@cli.command()
def bench() -> None:
    """Where the benchmarks are: scripts in benchmarks/ that print figures against baselines.

    Example: python benchmarks/matcher_bench.py --quick
    """
    typer.echo("benchmarks/matcher_bench.py   matcher: exact and approximate search, snapshots, DET/CMC plots")
    typer.echo("benchmarks/http_bench.py      HTTP identification with and without micro-batching")
    typer.echo("benchmarks/deadline_bench.py  deadline misses, earliest-deadline-first against FIFO")
    typer.echo("benchmarks/enrol_bench.py     bulk enrolment records/s on SQLite and PostgreSQL")
    typer.echo("benchmarks/audit_bench.py     audit append latency, sequencing delay, checkpoint signing rate")
    typer.echo(
        "benchmarks/dedup_bench.py     gallery deduplication: GEMM-rate fraction, planted-pair recall, false pairs"
    )


PRIVATE_FILES = 0o077
"""The umask of every readmit command: what it creates in the data folder (the database, its
journal, snapshots, key files, reports) is its user's alone. The database holds identity
attributes in clear and the API keys' hashes; it was created readable by every user of the host."""


def main() -> None:
    import os

    os.umask(PRIVATE_FILES)
    cli()
