"""Identification (1:N): what may be searched, the search queued in deadline order, and its
result read back.

A search targets, for each requested country, the gallery of the requested modality and template
format, provided an agreement between the agency's state and that country covers the modality on
the day; every other country is reported as skipped with the reason, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit import service as audit
from app.audit.actions import Action
from app.cases.models import Case
from app.cases.service import CaseTerms, ensure_open, owns, touched_countries, visible_case
from app.core.cache import CommittedRowsCache, NotCached
from app.core.config import Settings
from app.db.base import utcnow
from app.db.session import Sessions, transaction
from app.galleries.exceptions import InvalidTemplate
from app.galleries.service import template_format
from app.galleries.templates import EncodedTemplates, to_bytes
from app.matching.exceptions import (
    CountryNotPresumed,
    IdempotencyKeyReused,
    InvalidFmr,
    InvalidFpir,
    LowQuality,
    SearchNotRecorded,
    UnknownSearch,
)
from app.matching.executor import Admission, Job, SearchExecutor, write_admitted
from app.matching.fused import ModalPart
from app.matching.models import Search, SearchStatus
from app.matching.quality import Screening, screen
from app.matching.rates import rate_from_request
from app.matching.scheduler import Scheduler
from app.matching.terms import CachedTerms, DatabaseTerms, Terms
from app.matching.views import SearchView, search_view, search_views
from app.principals.models import Principal
from matcher import CalibrationError, TemplateFormat


@dataclass(frozen=True)
class ProbeSet:
    """One modality's probe samples, with their qualities (0-100, None where unknown) if sent."""

    modality: str
    template_format: TemplateFormat
    probes: EncodedTemplates
    qualities: Sequence[float | None] | None = None


@dataclass(frozen=True)
class IdentificationRequest:
    probe_sets: tuple[ProbeSet, ...]
    """One for a single-modality identification; each modality's for a fused one."""
    fused: bool = False
    """Candidates are people, scored over every modality (the request's ``modalities`` form)."""
    countries: list[str] | None = None
    """Default: the case's presumed countries."""
    max_candidates: int = 30
    target_fpir: float | None = None
    """Default: the service's configured FPIR."""
    allow_partial_results: bool = False
    idempotency_key: str | None = None
    """The submitter's ``Idempotency-Key``: this request, resent with it, answers the search it
    made instead of running another."""


@dataclass(frozen=True)
class Matching:
    """The parts of this node an identification runs on: where it is written and read, the
    queue and the executor that run it, and the service's settings. Every front door (the
    identification route, a peer's search) passes the same bundle."""

    sessions: Sessions
    readers: Sessions
    scheduler: Scheduler
    executor: SearchExecutor
    settings: Settings
    terms: CommittedRowsCache
    """What admissions read, kept (app/matching/terms.py)."""


async def identify(
    parts: Matching,
    actor: Principal,
    case_id: int,
    request: IdentificationRequest,
    wait_s: float,
) -> SearchView:
    """Submit an identification, wait up to ``wait_s`` for the scheduler to run it (earliest
    deadline first), and answer how it ended, or that it is still queued for the caller to poll.

    What may be searched is read, not written: from the cache of terms, in the caller's own
    coroutine when it holds them all, else from ``parts.readers`` (on SQLite, beside the writer). A
    search answered within ``wait_s`` is written once, ended, in the transaction that ends its
    whole batch, with both its events (``search.submit``, ``search.complete``): a crash before
    that loses only a search nobody was told of, whose caller gets no answer and submits again.
    One still running when ``wait_s`` runs out is written queued before the caller is told so,
    and survives a restart. The answer is built from what was written, never read back; a later
    ``GET /v1/searches/{id}`` reads the database, and is audited as a read.

    A coroutine: the caller's wait holds no thread (database work runs in worker threads), so
    many callers waiting on a busy queue never starve the thread pool other requests need."""
    sessions, scheduler, executor = parts.sessions, parts.scheduler, parts.executor
    threads = parts.settings.identification_threads
    key = request.idempotency_key
    keyed = None if key is None else (key, request_digest(request, parts.settings))
    if keyed is not None and (earlier := await _resent(parts, actor, case_id, keyed, wait_s)) is not None:
        return earlier
    try:
        search, probes, details, countries = admit(CachedTerms(parts.terms), parts.settings, actor, case_id, request)
    except NotCached:
        search, probes, details, countries = await in_turn(
            threads, _admitted, parts.readers, parts.terms, parts.settings, actor, case_id, request
        )
    search.idempotency_key, search.request_digest = keyed or (None, None)
    admission = Admission(_row(search), actor, details, countries)
    try:
        if not search.searched_galleries:  # nothing to search: done at once
            search.id = await in_turn(threads, _write_at_once, sessions, admission)
            return search_view(search, [])
        if key is None:
            ticket = executor.ticket()
            executor.accept(Job.of(ticket, search, probes[0], countries, probes[1]), awaited=True, admission=admission)
        else:  # written before it runs, which takes its key
            ticket = search.id = await in_turn(threads, executor.write_held, admission)
            executor.accept(Job.of(ticket, search, probes[0], countries, probes[1]), awaited=True)
    except IntegrityError:  # the key was taken meanwhile, by a resend that crossed this request
        if keyed is None or (earlier := await _resent(parts, actor, case_id, keyed, wait_s)) is None:
            raise
        return earlier
    scheduler.submit(ticket, search.deadline, tuple(sorted(search.searched_galleries)))
    try:
        if not await batch_ended(scheduler, ticket, wait_s):
            if key is not None:  # written queued and held here: it runs in turn
                return search_view(search, [])
            written = await in_turn(threads, executor.write_now, ticket)
            if written is not None:
                search.id = written
                return search_view(search, [])
            await batch_ended(scheduler, ticket, BATCH_END_S)  # its batch is ending, and writes it
    finally:
        finished = executor.collect(ticket)  # also forgets a caller gone before the end
    if finished is None and key is not None:  # written before it ran: it ends where it is held now
        return await in_turn(threads, written_view, parts.readers, search.id)
    if finished is None:
        raise SearchNotRecorded("the search could not be completed; nothing was recorded: submit it again")
    search.id = finished.search_id
    return replace(
        search_view(search, []),
        status=finished.status,
        error=finished.error,
        started_at=finished.started_at,
        finished_at=finished.finished_at,
        candidates=finished.candidates,
        missing_shards=finished.missing_shards,
    )


def request_digest(request: IdentificationRequest, settings: Settings) -> str:
    """SHA-256 of what an identification asks: its probes (their float32 values as sent, however
    encoded; not normalised, which may differ in the last bit between hosts), formats,
    qualities, countries (as a set) and options (the FPIR once defaulted), its modalities in any
    order; not how long its caller waits."""
    digest = hashlib.sha256()
    countries = None if request.countries is None else sorted(set(request.countries))
    fpir = request.target_fpir or settings.default_fpir
    options = [request.fused, countries, request.max_candidates, fpir, request.allow_partial_results]
    digest.update(json.dumps(options).encode())
    for probe_set in sorted(request.probe_sets, key=lambda probe_set: probe_set.modality):
        fmt = probe_set.template_format
        qualities = None if probe_set.qualities is None else list(probe_set.qualities)
        digest.update(json.dumps([probe_set.modality, fmt.model, fmt.dimension, fmt.metric.value, qualities]).encode())
        digest.update(to_bytes(probe_set.probes.unchecked(fmt, settings.max_probes, what="probe")))
    return digest.hexdigest()


def _keyed_search(readers: Sessions, actor: Principal, case_id: int, key: str) -> tuple[int, str | None] | None:
    """The search (id, request digest) the key already made in this case of the actor's agency."""
    with readers() as session:
        visible_case(session, actor, case_id)  # 404 outside the caller's agency
        row = session.execute(
            select(Search.id, Search.request_digest).where(Search.case_id == case_id, Search.idempotency_key == key)
        ).first()
    return None if row is None else (row.id, row.request_digest)


RESENT_POLL_S = (0.02, 0.5)
"""How often a resent request looks whether its search has ended: first, and at most (doubling)."""


async def _resent(
    parts: Matching, actor: Principal, case_id: int, keyed: tuple[str, str], wait_s: float
) -> SearchView | None:
    """If ``keyed`` (key, request digest) made a search already, this request is its resend:
    the search (run by whichever process holds it) as it stands once it ends or ``wait_s`` runs
    out, read as ``GET /v1/searches/{id}`` reads it (audited as a read). None: a first request."""
    threads = parts.settings.identification_threads
    key, digest = keyed
    found = await in_turn(threads, _keyed_search, parts.readers, actor, case_id, key)
    if found is None:
        return None
    search_id, earlier_digest = found
    if earlier_digest != digest:
        raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was sent with another request in this case")
    give_up = time.monotonic() + wait_s
    pause, longest = RESENT_POLL_S
    while time.monotonic() < give_up and not await in_turn(threads, _has_ended, parts.readers, search_id):
        await asyncio.sleep(min(pause, max(0.0, give_up - time.monotonic())))
        pause = min(2 * pause, longest)
    return await in_turn(threads, read_search, parts.sessions, actor, search_id)


def _has_ended(readers: Sessions, search_id: int) -> bool:
    with readers() as session:
        return session.scalar(select(Search.status).where(Search.id == search_id)) not in (
            SearchStatus.QUEUED.value,
            SearchStatus.RUNNING.value,
        )


T = TypeVar("T")

_TURNS: RunVar[CapacityLimiter] = RunVar("readmit_identification_threads")


async def in_turn(threads: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread, with at most ``threads`` of the identifications'
    database work at once in this event loop (every other blocking call may take forty). The
    matcher is the service's one serial resource, and between its FAISS calls its thread needs
    the interpreter lock: with every waiting client's admission in a thread of its own, thirty
    threads contended with it for the lock, and a batch of nine searches took 25 ms where the
    matcher alone takes 8. At 1M templates, 32 clients (SQLite, 2 vCPUs), two threads
    answered 336-360 identifications/s against 288-297 with the shared pool; one 355-361, four
    310-331; two leave a second read in flight on a database across the network."""
    try:
        turns = _TURNS.get()
    except LookupError:
        turns = CapacityLimiter(threads)
        _TURNS.set(turns)
    return await to_thread.run_sync(function, *args, limiter=turns)


async def batch_ended(scheduler: Scheduler, ticket: int, timeout_s: float) -> bool:
    """Whether the search's batch ran within ``timeout_s``, awaited without holding a thread:
    the worker that ends the batch wakes this event loop."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(ended.set)

    scheduler.when_done(ticket, wake)
    try:
        async with asyncio.timeout(timeout_s):
            await ended.wait()
    except TimeoutError:
        return False
    return True


Probes = tuple[np.ndarray, tuple[ModalPart, ...]]
"""A search's probes as its job takes them: a single-modality search's, or a fused search's
modalities (then the array is empty)."""


def _admitted(
    readers: Sessions,
    cache: CommittedRowsCache,
    settings: Settings,
    actor: Principal,
    case_id: int,
    request: IdentificationRequest,
) -> tuple[Search, Probes, dict[str, Any], list[str]]:
    with readers() as session:
        return admit(CachedTerms(cache, DatabaseTerms(session)), settings, actor, case_id, request)


def _write_at_once(sessions: Sessions, admission: Admission) -> int:
    with transaction(sessions) as session:
        [(search_id, submitted)] = write_admitted(session, [(admission, {})])
        audit.append_many(session, [submitted])
    return search_id


BATCH_END_S = 60.0
"""How long a caller whose search's batch is already ending waits for it (the batch's one
write transaction); only a stuck database makes it wait that long."""


def admit(
    terms: Terms, settings: Settings, actor: Principal, case_id: int, request: IdentificationRequest
) -> tuple[Search, Probes, dict[str, Any], list[str]]:
    """Validate an identification: the search to write (not yet written, without an id), its
    decoded probes, its ``search.submit`` event's details and the countries its events touch. A
    search with no gallery to search (every country skipped) is done at once, with no candidate.
    Probe samples below their modality's minimum quality are dropped (app/matching/quality.py)."""
    case = terms.case(actor, case_id)
    ensure_open(case)
    fpir = requested_rate(request.target_fpir or settings.default_fpir, InvalidFpir)
    countries = sorted(set(request.countries or case.presumed_countries))
    outside = [c for c in countries if c not in case.presumed_countries]
    if outside:
        raise CountryNotPresumed(f"not presumed countries of this case: {', '.join(outside)}")
    if request.fused:
        return _admit_fused(terms, settings, actor, case, request, fpir, countries)
    [probe_set] = request.probe_sets
    fmt = probe_set.template_format
    probes = probe_set.probes.decode(fmt, settings.max_probes, what="probe")
    screening = None
    if probe_set.qualities is not None:
        [screening] = _screened([probe_set], [probes], settings)
        probes = probes[screening.kept]
    searched, skipped = resolve_galleries(terms, case, probe_set.modality, fmt, countries)
    search = _search(actor, case, request, fpir, searched, skipped, probes=to_bytes(probes), probe_count=len(probes))
    search.modality, search.model, search.dimension, search.metric = (
        probe_set.modality,
        fmt.model,
        fmt.dimension,
        fmt.metric.value,
    )
    details = {"searched_galleries": searched, "skipped": skipped, "probe_count": len(probes), "fpir": fpir}
    if screening is not None:
        search.probe_qualities, search.dropped_samples = screening.qualities or None, screening.dropped or None
        if screening.dropped:
            details["dropped_samples"] = screening.dropped
    return search, (probes, ()), details, touched_countries(case)


def _admit_fused(
    terms: Terms,
    settings: Settings,
    actor: Principal,
    case: CaseTerms,
    request: IdentificationRequest,
    fpir: float,
    countries: list[str],
) -> tuple[Search, Probes, dict[str, Any], list[str]]:
    """A multi-modal search: each modality resolved to its galleries like a search of its own;
    a modality none of whose samples passes the quality screen is not searched (the others
    are: the Eurodac recast falls back to the face when fingerprints are unusable)."""
    decoded = [ps.probes.decode(ps.template_format, settings.max_probes, what="probe") for ps in request.probe_sets]
    screenings = _screened(request.probe_sets, decoded, settings)
    parts, modalities, searched, skipped = [], [], [], []
    for probe_set, probes, screening in zip(request.probe_sets, decoded, screenings, strict=True):
        if screening.empty:
            continue
        probes = probes[screening.kept]
        fmt = probe_set.template_format
        galleries, passed_over = resolve_galleries(terms, case, probe_set.modality, fmt, countries)
        parts.append(ModalPart(probe_set.modality, probes, galleries))
        modalities.append(
            {
                "modality": probe_set.modality,
                "template_format": {"model": fmt.model, "dimension": fmt.dimension, "metric": fmt.metric.value},
                "probe_count": len(probes),
                "searched_galleries": galleries,
            }
        )
        searched += galleries
        skipped += [{**entry, "modality": probe_set.modality} for entry in passed_over]
    search = _search(
        actor,
        case,
        request,
        fpir,
        searched,
        skipped,
        probes=b"".join(to_bytes(part.probes) for part in parts),
        probe_count=sum(len(part.probes) for part in parts),
    )
    search.modality, search.model, search.dimension, search.metric = FUSED, FUSED, 0, FUSED
    search.modalities = modalities
    search.probe_qualities = [q for screening in screenings for q in screening.qualities] or None
    search.dropped_samples = [d for screening in screenings for d in screening.dropped] or None
    details = {
        "modalities": [m["modality"] for m in modalities],
        "searched_galleries": searched,
        "skipped": skipped,
        "probe_count": search.probe_count,
        "fpir": fpir,
    }
    if search.dropped_samples:
        details["dropped_samples"] = search.dropped_samples
    return search, (np.empty((0, 0), np.float32), tuple(parts)), details, touched_countries(case)


FUSED = "fused"
"""The modality, model and metric columns of a multi-modal search (its own are in ``modalities``)."""


def _screened(probe_sets: Sequence[ProbeSet], decoded: list[np.ndarray], settings: Settings) -> list[Screening]:
    """Each probe set's quality screen; refused with low_quality when no sample of any is left."""
    screenings = [
        screen(ps.modality, ps.qualities, len(probes), settings.min_probe_quality.get(ps.modality))
        if ps.qualities is not None
        else Screening(list(range(len(probes))))
        for ps, probes in zip(probe_sets, decoded, strict=True)
    ]
    if all(screening.empty for screening in screenings):
        dropped = [d for screening in screenings for d in screening.dropped]
        raise LowQuality(
            "every probe sample is below its modality's minimum quality: capture better samples",
            details={"samples": dropped},
        )
    return screenings


def _search(
    actor: Principal,
    case: CaseTerms,
    request: IdentificationRequest,
    fpir: float,
    searched: list[int],
    skipped: list[dict[str, str]],
    probes: bytes,
    probe_count: int,
) -> Search:
    """The search row to write, before its modality and format columns are set."""
    now = utcnow()
    return Search(
        case_id=case.id,
        probes=probes,
        probe_count=probe_count,
        searched_galleries=searched,
        skipped=skipped,
        max_candidates=request.max_candidates,
        target_fpir=fpir,
        status=SearchStatus.QUEUED.value if searched else SearchStatus.DONE.value,
        deadline=case.deadline,
        submitted_at=now,
        finished_at=None if searched else now,
        submitted_by=actor.id,
        allow_partial=request.allow_partial_results,
        error=None,
        started_at=None,
        missing_shards=None,
        modalities=None,
        probe_qualities=None,
        dropped_samples=None,
    )


def _row(search: Search) -> dict[str, Any]:
    """The search's column values, as its row is inserted."""
    return {column.key: getattr(search, column.key) for column in _WRITTEN_COLUMNS}


def requested_rate(value: float, error: type[InvalidFpir] | type[InvalidFmr]) -> float:
    """The request's FPIR or FMR as a fraction, or ``error`` naming what was wrong with it."""
    try:
        return rate_from_request(value)
    except CalibrationError as cause:
        raise error(str(cause)) from cause


def resolve_galleries(
    terms: Terms, case: CaseTerms, modality: str, fmt: TemplateFormat, countries: list[str]
) -> tuple[list[int], list[dict[str, str]]]:
    """The galleries the case may search in ``countries``, and the countries skipped, with why
    (from ``terms``: kept, or two Core queries whatever the number of countries)."""
    allowed = terms.countries_in_force(case.agency_country, countries, modality, utcnow().date())
    galleries = {gallery.country: gallery for gallery in terms.galleries(sorted(allowed), modality, fmt.model)}
    searched, skipped = [], []
    for country in countries:
        gallery = galleries.get(country)
        if country not in allowed:
            skipped.append({"country": country, "reason": "no_agreement"})
        elif gallery is None:
            skipped.append({"country": country, "reason": "no_gallery"})
        elif template_format(gallery) != fmt:
            raise InvalidTemplate(
                f"{country}'s {modality} gallery for {fmt.model} holds {gallery.dimension}-d {gallery.metric} "
                f"templates, not {fmt.dimension}-d {fmt.metric.value}"
            )
        else:
            searched.append(gallery.id)
    return searched, skipped


def written_view(readers: Sessions, search_id: int) -> SearchView:
    """A search as now written, for the caller that submitted it (its answer, not audited as a
    read); read through ``readers``: on SQLite, no wait for the write lock."""
    with readers() as session:
        search = session.get(Search, search_id)
        assert search is not None
        [view] = search_views(session, [search])
        return view


def read_search(sessions: Sessions, actor: Principal, search_id: int) -> SearchView:
    """A search of the actor's agency with its candidates; the read is audited."""
    with transaction(sessions) as session:
        search = session.get(Search, search_id)
        case = None if search is None else session.get(Case, search.case_id)
        if search is None or case is None or not owns(actor, case):  # one answer: whose searches exist is no one else's
            raise UnknownSearch(f"search {search_id} not found")
        [view] = search_views(session, [search])
        audit.append(
            session,
            actor,
            Action.SEARCH_READ,
            f"case/{search.case_id}/search/{search.id}",
            touched_countries(case),
            details={"candidates": len(view.candidates)},
        )
    return view


_WRITTEN_COLUMNS = [column for column in Search.__table__.columns if column.key != "id"]
