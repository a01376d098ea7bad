"""Open-set identification accuracy on real face embeddings: LFW through dlib's ResNet model.

The protocol of issue 15, on ``../shared/data/lfw_dlib128_dev.npz`` (the development half of LFW's
identities; see that folder's README). People sorted by name, each person's images by file name:

* gallery: the first image of every person with two or more images, plus every other person
  with one image (the 1st, 3rd, 5th ... of them);
* mated searches: up to 4 further images of each enrolled person;
* non-mated searches: the remaining one-image people, never enrolled.

Figures as NIST FRTE 1:N reports them: TPIR = 1 - FNIR (mate at rank 1 and at or above the
threshold) at a target FPIR, the FPIR actually achieved on the non-mated searches, and rank-1
regardless of threshold. Thresholds are calibrated as the service calibrates them, on the
gallery's own leave-one-out searches, never on the probes; a threshold set with hindsight on the
probes themselves is printed beside them for reference. Three decisions are compared: the fixed
score threshold, the top-1/top-2 gap, and the cohort margin the service uses (matcher.CohortMargin).

Intervals are Wilson score intervals at 95% (Wilson, JASA 22, 1927; Brown, Cai & DasGupta,
Statistical Science 16, 2001). About 1,020 non-mated searches hold 1 false positive at FPIR 0.001:
an achieved FPIR there is a count of 0, 1 or 2 and means little.

    python benchmarks/real_eval.py                      # matcher, cosine and l2 galleries
    python benchmarks/real_eval.py --http               # and through the real service
    python benchmarks/real_eval.py --twins 20           # the cost of a person enrolled twice
    python benchmarks/real_eval.py --pq-size 1000000    # PQ shortlist vs exact on real structure

``--data`` or READMIT_LFW_DEV names another file; ``--people`` keeps the first N people (a slice).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import create_admin_key, out_dir, print_json, print_table, scratch_folder, start_service

from matcher import (
    Calibration,
    CohortMargin,
    GalleryIndex,
    IndexKind,
    IndexPolicy,
    Metric,
    SearchResult,
    TemplateFormat,
    leave_one_out_decision_scores,
)
from matcher.evaluation import cmc, det_curve, fnir_at_fpir, mate_ranks
from matcher.gallery import leave_one_out_top_scores

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lfw_dlib128_dev.npz"
MODEL = "dlib_face_recognition_resnet_model_v1"
FPIRS = (0.1, 0.01, 0.003, 0.001)
MATED_PER_PERSON = 4
CMC_RANKS = 30
DECISION = CohortMargin()
RULES = {"gap": CohortMargin(skip=0, size=1), "decision": DECISION}
"""Rules beside the fixed score threshold: the top-1/top-2 gap, and the service's cohort margin."""


@dataclass(frozen=True)
class Protocol:
    """Templates of the gallery (one record a row, named by ``references``, ``gallery_person``
    the person of each), the mated probes with their person, and the non-mated probes. A mated
    search finds its mate when its first candidate is a record of its person. ``mated_files``
    names each mated probe's image, so that two protocols' probes can be matched up."""

    gallery: np.ndarray
    references: list[str]
    gallery_person: np.ndarray
    mated: np.ndarray
    mated_person: np.ndarray
    mated_files: np.ndarray
    nonmated: np.ndarray
    twin_probe: np.ndarray
    """Per mated probe: whether its person is enrolled twice (see :func:`load_protocol`)."""

    def ranks(self, result: SearchResult) -> np.ndarray:
        """Rank of the first record of each mated search's person (0: not in the list)."""
        people = np.where(result.record_ids >= 0, self.gallery_person[np.maximum(result.record_ids, 0)], -1)
        return mate_ranks(people, self.mated_person)


def data_path(option: str | None) -> Path:
    return Path(option or os.environ.get("READMIT_LFW_DEV") or DEFAULT_DATA)


def load_protocol(path: Path, people: int | None = None, twins: int = 0) -> Protocol:
    """The issue's protocol on the file at ``path``, on its first ``people`` people (all by default).

    With ``twins``, that many people with three or more images (every k-th of them, so spread over
    the alphabet) are enrolled twice, their second image as a second record: the case of one
    person registered twice under two reference ids. Their mated probes then start at their third
    image.
    """
    data = np.load(path, allow_pickle=False)
    order = np.lexsort((data["files"], data["labels"]))
    templates, labels, files = data["X"][order], data["labels"][order], data["files"][order]
    names, first, counts = np.unique(labels, return_index=True, return_counts=True)
    if people is not None:
        names, first, counts = names[:people], first[:people], counts[:people]
    several = np.flatnonzero(counts >= 3)
    twinned = set(several[:: max(1, several.size // twins)][:twins].tolist()) if twins else set()
    gallery_rows: list[int] = []
    references: list[str] = []
    gallery_person: list[int] = []
    mated_rows: list[int] = []
    mated_person: list[int] = []
    twin_probe: list[bool] = []
    singles = 0
    for person, (name, start, count) in enumerate(zip(names, first, counts, strict=True)):
        if count == 1:
            singles += 1
            if singles % 2 == 1:
                gallery_rows.append(start)
                references.append(str(name))
                gallery_person.append(person)
            continue
        enrolled = 2 if person in twinned else 1
        gallery_rows += [start + i for i in range(enrolled)]
        references += [str(name), f"{name}#2"][:enrolled]
        gallery_person += [person] * enrolled
        for row in range(start + enrolled, start + min(count, 1 + MATED_PER_PERSON)):
            mated_rows.append(row)
            mated_person.append(person)
            twin_probe.append(person in twinned)
    nonmated_rows = first[counts == 1][1::2]
    return Protocol(
        gallery=templates[gallery_rows],
        references=references,
        gallery_person=np.array(gallery_person, dtype=np.int64),
        mated=templates[mated_rows],
        mated_person=np.array(mated_person, dtype=np.int64),
        mated_files=files[mated_rows],
        nonmated=templates[nonmated_rows],
        twin_probe=np.array(twin_probe, dtype=bool),
    )


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Statistic:
    """One decision rule measured on a protocol: its value for each mated search's rank-1
    candidate and each non-mated search's best candidate, and its calibration sample (the
    gallery's leave-one-out searches)."""

    mated: np.ndarray
    nonmated: np.ndarray
    calibration: np.ndarray


def rates(statistic: Statistic, ranks: np.ndarray, fpir: float, hits: np.ndarray | None = None) -> dict[str, object]:
    """TPIR and achieved FPIR at the threshold calibrated for ``fpir``, with 95% intervals; the
    TPIR of a hindsight threshold set on the non-mated probes; ``hits`` restricts the mated
    searches counted."""
    calibration = Calibration(statistic.calibration, clamp=True)
    threshold = calibration.thresholds_at_rate(fpir).match
    found = (ranks == 1) & (statistic.mated >= threshold)
    if hits is not None:
        found = found[hits]
    false = int(np.sum(statistic.nonmated >= threshold))
    hindsight = (
        fnir_at_fpir(statistic.mated, ranks, statistic.nonmated, fpir) if fpir * statistic.nonmated.size >= 1 else None
    )
    return {
        "target_fpir": fpir,
        "threshold": threshold,
        "calibration_resolved": calibration.resolves(fpir),
        "tpir": float(found.mean()) if found.size else 0.0,
        "tpir_ci": wilson(int(found.sum()), found.size),
        "fpir": false / statistic.nonmated.size,
        "fpir_ci": wilson(false, statistic.nonmated.size),
        "false_positives": false,
        "hindsight_tpir": None if hindsight is None else 1 - hindsight.fnir,
    }


@dataclass(frozen=True)
class MatcherRun:
    ranks: np.ndarray
    statistics: dict[str, Statistic]

    def figures(self, fpirs: tuple[float, ...], hits: np.ndarray | None = None) -> dict[str, object]:
        ranks = self.ranks if hits is None else self.ranks[hits]
        return {
            "rank1": float(np.mean(ranks == 1)),
            "mated_searches": int(ranks.size),
            "nonmated_searches": int(next(iter(self.statistics.values())).nonmated.size),
            **{name: [rates(s, self.ranks, f, hits) for f in fpirs] for name, s in self.statistics.items()},
        }


def run_matcher(protocol: Protocol, metric: Metric, kind: IndexKind = IndexKind.EXACT) -> MatcherRun:
    """The protocol through an in-process gallery index of ``metric``: every decision rule."""
    index = GalleryIndex(TemplateFormat(MODEL, protocol.gallery.shape[1], metric), IndexPolicy(forced_kind=kind))
    index.add(np.arange(len(protocol.references)), protocol.gallery)
    return measure(index, protocol)


def measure(index: GalleryIndex, protocol: Protocol, calibration_searches: int | None = None) -> MatcherRun:
    """Every decision rule on ``index`` (holding the protocol's gallery, record id = row)."""
    depth = max(CMC_RANKS, DECISION.depth)
    mated = index.search(protocol.mated, depth)
    nonmated = index.search(protocol.nonmated, depth)
    own, samples = index.sample_templates(calibration_searches or len(protocol.references))
    return MatcherRun(
        ranks=protocol.ranks(mated),
        statistics={
            "score": Statistic(
                _rank1(mated.scores), _rank1(nonmated.scores), leave_one_out_top_scores(index.search, own, samples)
            ),
            **{
                name: Statistic(
                    _rank1(rule.scores(mated)),
                    _rank1(rule.scores(nonmated)),
                    leave_one_out_decision_scores(rule, index.search, own, samples),
                )
                for name, rule in RULES.items()
            },
        },
    )


def _rank1(values: np.ndarray) -> np.ndarray:
    return np.asarray(values[:, 0], dtype=np.float64)


# -- through the service --------------------------------------------------------------------------


async def run_http(protocol: Protocol, metric: Metric, fpirs: tuple[float, ...], port: int) -> dict[str, object]:
    """The protocol through the real service: gallery, records and searches over HTTP, one
    identification per probe and target FPIR; a mated search counts when its first candidate is
    its mate in the ``match`` band, a non-mated one is a false positive when any candidate is."""
    with scratch_folder() as folder:
        data_dir = Path(folder)
        admin = {"Authorization": f"Bearer {create_admin_key(data_dir)}"}
        process = start_service(port, data_dir=str(data_dir), calibration_searches=str(len(protocol.references)))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                police = await _enrol(client, admin, protocol, metric)
                return await _identify_all(client, police, protocol, metric, fpirs)
        finally:
            process.terminate()
            process.wait(timeout=60)


async def _post(client: httpx.AsyncClient, path: str, headers: dict[str, str], body: dict[str, object]) -> dict:
    response = await client.post(path, json=body, headers=headers)
    if response.status_code >= 300:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
    return response.json()


async def _key(client: httpx.AsyncClient, admin: dict[str, str], role: str, **scope: str) -> dict[str, str]:
    created = await _post(client, "/v1/principals", admin, {"name": f"eval {role}", "role": role, **scope})
    return {"Authorization": f"Bearer {created['api_key']}"}


async def _enrol(
    client: httpx.AsyncClient, admin: dict[str, str], protocol: Protocol, metric: Metric
) -> dict[str, str]:
    """A SEN face gallery of ``metric`` holding the protocol's gallery, a FRA agreement; returns
    a border police key."""
    registry = await _key(client, admin, "registry", country="SEN")
    police = await _key(client, admin, "border_police", country="FRA", agency="FRA-EVAL")
    await _post(
        client,
        "/v1/agreements",
        admin,
        {"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    )
    template_format = {"model": MODEL, "dimension": protocol.gallery.shape[1], "metric": metric.value}
    gallery = await _post(
        client, "/v1/galleries", admin, {"country": "SEN", "modality": "face", "template_format": template_format}
    )
    for start in range(0, len(protocol.references), 500):
        block = [
            {"reference_id": reference, "templates": [template.tolist()]}
            for reference, template in zip(
                protocol.references[start : start + 500], protocol.gallery[start : start + 500], strict=True
            )
        ]
        answer = await _post(client, f"/v1/galleries/{gallery['id']}/records:batch", registry, {"records": block})
        if answer["errors"]:
            raise RuntimeError(f"enrolment refused records: {answer['errors'][:3]}")
    return police


async def _identify_all(
    client: httpx.AsyncClient,
    police: dict[str, str],
    protocol: Protocol,
    metric: Metric,
    fpirs: tuple[float, ...],
    concurrency: int = 4,
) -> dict[str, object]:
    case = await _post(
        client,
        "/v1/cases",
        police,
        {
            "external_ref": "LFW-DEV",
            "detained_at": "2026-11-20T00:00:00Z",
            "detention_limit_days": 180,
            "presumed_countries": ["SEN"],
            "legal_basis": "consent",
        },
    )
    path = f"/v1/cases/{case['id']}/identifications"
    template_format = {"model": MODEL, "dimension": protocol.gallery.shape[1], "metric": metric.value}
    gate = asyncio.Semaphore(concurrency)

    async def first_candidates(probe: np.ndarray, fpir: float) -> list[dict]:
        body = {
            "modality": "face",
            "template_format": template_format,
            "probes_b64": [base64.b64encode(probe.astype("<f4").tobytes()).decode()],
            "target_fpir": fpir,
            "wait_ms": 30_000,
        }
        async with gate:
            answer = await _post(client, path, police, body)
        if answer["status"] != "done":
            raise RuntimeError(f"search {answer['id']} ended {answer['status']}")
        return list(answer["candidates"])

    figures = []
    for fpir in fpirs:
        mated = await asyncio.gather(*(first_candidates(p, fpir) for p in protocol.mated))
        nonmated = await asyncio.gather(*(first_candidates(p, fpir) for p in protocol.nonmated))
        person = dict(zip(protocol.references, protocol.gallery_person.tolist(), strict=True))
        found = sum(
            bool(c) and c[0]["band"] == "match" and person[c[0]["reference_id"]] == mate
            for c, mate in zip(mated, protocol.mated_person.tolist(), strict=True)
        )
        false = sum(any(candidate["band"] == "match" for candidate in c) for c in nonmated)
        figures.append(
            {
                "target_fpir": fpir,
                "tpir": found / len(mated),
                "tpir_ci": wilson(found, len(mated)),
                "fpir": false / len(nonmated),
                "fpir_ci": wilson(false, len(nonmated)),
                "false_positives": false,
            }
        )
    return {"decision": figures}


# -- approximate search on real structure --------------------------------------------------------


def pq_against_exact(protocol: Protocol, metric: Metric, size: int, shortlist: int, seed: int = 0) -> dict[str, object]:
    """The protocol's gallery padded to ``size`` records with distractors drawn from a Gaussian of
    the real templates' mean and covariance, searched exactly and through the PQ fast-scan
    shortlist: rank-1 and TPIR at each FPIR of both, from the same leave-one-out calibration
    (20,000 searches)."""
    real = np.vstack([protocol.gallery, protocol.mated, protocol.nonmated]).astype(np.float64)
    rng = np.random.default_rng(seed)
    extra = size - len(protocol.references)
    distractors = rng.multivariate_normal(real.mean(axis=0), np.cov(real, rowvar=False), size=extra, method="cholesky")
    templates = np.vstack([protocol.gallery, distractors.astype(np.float32)])
    padded = replace(
        protocol,
        references=protocol.references + [f"distractor-{i}" for i in range(extra)],
        gallery_person=np.concatenate([protocol.gallery_person, np.full(extra, -2, np.int64)]),
    )
    template_format = TemplateFormat(MODEL, templates.shape[1], metric)
    figures: dict[str, object] = {"size": size, "shortlist": shortlist}
    for kind in (IndexKind.EXACT, IndexKind.PQ_FASTSCAN):
        index = GalleryIndex(template_format, IndexPolicy(forced_kind=kind, shortlist_length=shortlist))
        index.add(np.arange(size), templates)
        run = measure(index, padded, calibration_searches=20_000)
        figures[kind.value] = run.figures(FPIRS[:3])
        del index
    return figures


# -- output --------------------------------------------------------------------------------------


def describe(name: str, figures: dict[str, object], statistics: tuple[str, ...]) -> list[tuple[str, str]]:
    rows = []
    if "rank1" in figures:
        rows.append((f"{name} rank-1 (any threshold)", f"{figures['rank1']:.3f}"))
    for statistic in statistics:
        for entry in figures[statistic]:  # type: ignore[attr-defined]
            low, high = entry["fpir_ci"]
            hindsight = entry.get("hindsight_tpir")
            rows.append(
                (
                    f"{name} {statistic} @ FPIR {entry['target_fpir']:g}",
                    f"TPIR {entry['tpir']:.3f} [{entry['tpir_ci'][0]:.3f}, {entry['tpir_ci'][1]:.3f}]  "
                    f"FNIR {1 - entry['tpir']:.3f}  achieved FPIR {entry['fpir']:.4f} "
                    f"({entry['false_positives']} searches) [{low:.4f}, {high:.4f}]"
                    + ("" if hindsight is None else f"  hindsight TPIR {hindsight:.3f}")
                    + ("" if entry.get("calibration_resolved", True) else "  (calibration sample too small: clamped)"),
                )
            )
    return rows


def plot(runs: dict[str, MatcherRun], name: str) -> list[str]:
    from plots import plot_cmc, plot_det

    folder = out_dir()
    det = {
        f"{label} {rule}": det_curve(statistic.mated, run.ranks, statistic.nonmated)
        for label, run in runs.items()
        for rule, statistic in run.statistics.items()
    }
    paths = [folder / f"{name}_det.png", folder / f"{name}_cmc.png"]
    plot_det(det, paths[0])
    plot_cmc({label: cmc(run.ranks, CMC_RANKS) for label, run in runs.items()}, paths[1])
    return [str(path) for path in paths]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help=f"the .npz file (default: READMIT_LFW_DEV or {DEFAULT_DATA})")
    parser.add_argument("--people", type=int, help="only the first N people by name (a slice, for tests)")
    parser.add_argument("--metric", choices=[m.value for m in Metric], action="append", help="default: cosine, l2")
    parser.add_argument("--http", action="store_true", help="also through the real service")
    parser.add_argument("--port", type=int, default=18850)
    parser.add_argument("--twins", type=int, default=0, help="also measure N people enrolled twice")
    parser.add_argument("--pq-size", type=int, help="also PQ shortlist vs exact at this gallery size")
    parser.add_argument("--shortlist", type=int, default=IndexPolicy().shortlist_length)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    path = data_path(args.data)
    protocol = load_protocol(path, args.people)
    metrics = [Metric(m) for m in args.metric or (Metric.COSINE.value, Metric.L2.value)]
    print(
        f"{path.name}: gallery {len(protocol.references)} records, {len(protocol.mated)} mated and "
        f"{len(protocol.nonmated)} non-mated searches. These resolve an FPIR down to about "
        f"{1 / len(protocol.nonmated):.4f}: at 0.003 the expected count of false positives is "
        f"{0.003 * len(protocol.nonmated):.1f} searches, at 0.001 it is {0.001 * len(protocol.nonmated):.1f}, "
        "so an achieved FPIR there is a count of a few searches and its interval is wide."
    )
    figures: dict[str, object] = {"data": path.name, "gallery": len(protocol.references)}
    runs = {metric.value: run_matcher(protocol, metric) for metric in metrics}
    for label, run in runs.items():
        figures[f"matcher_{label}"] = run.figures(FPIRS)
        print_table(
            f"matcher, {label} gallery", describe(label, figures[f"matcher_{label}"], ("score", "gap", "decision"))
        )  # type: ignore[arg-type]
    if not args.no_plots:
        figures["plots"] = plot(runs, "real_eval")
    for metric in metrics if args.http else []:
        figures[f"http_{metric.value}"] = service = asyncio.run(run_http(protocol, metric, FPIRS, args.port))
        print_table(f"through the service, {metric.value} gallery", describe(metric.value, service, ("decision",)))
    if args.twins:
        figures["twins"] = twins = enrolled_twice(path, args.people, args.twins, metrics)
        for label, entry in twins.items():
            print_table(
                f"{args.twins} people enrolled twice, {label} gallery",
                [
                    (f"{rule} @ FPIR {t:g}", text)
                    for rule in ("score", "gap", "decision")
                    for t, text in zip(FPIRS[:3], _twin_lines(entry, rule), strict=True)
                ],
            )
    if args.pq_size:
        for metric in metrics:
            figures[f"pq_{metric.value}"] = pq = pq_against_exact(protocol, metric, args.pq_size, args.shortlist)
            for kind in (IndexKind.EXACT.value, IndexKind.PQ_FASTSCAN.value):
                print_table(
                    f"{args.pq_size:,} records, {metric.value}, {kind} (shortlist {args.shortlist})",
                    describe(kind, pq[kind], ("score", "decision")),  # type: ignore[arg-type]
                )
    print_json(figures)
    return figures


def enrolled_twice(path: Path, people: int | None, twins: int, metrics: list[Metric]) -> dict[str, dict[str, object]]:
    """Per metric: the twinned people's probes when they are enrolled twice and, the same probes,
    when enrolled once; and everyone else's probes in both galleries (the twins also sit in the
    leave-one-out searches that calibrate the gallery, as their own best non-mated candidates)."""
    once = load_protocol(path, people)
    twice = load_protocol(path, people, twins)
    same = np.isin(once.mated_files, twice.mated_files[twice.twin_probe])
    others = ~np.isin(once.mated_person, twice.mated_person[twice.twin_probe])
    results: dict[str, dict[str, object]] = {}
    for metric in metrics:
        run_once, run_twice = run_matcher(once, metric), run_matcher(twice, metric)
        results[metric.value] = {
            "twin_probes": int(twice.twin_probe.sum()),
            "twice": run_twice.figures(FPIRS[:3], twice.twin_probe),
            "once": run_once.figures(FPIRS[:3], same),
            "others_twice": run_twice.figures(FPIRS[:3], ~twice.twin_probe),
            "others_once": run_once.figures(FPIRS[:3], others),
        }
    return results


def _twin_lines(entry: dict[str, object], rule: str) -> list[str]:
    def tpir(part: str, position: int) -> str:
        return f"{entry[part][rule][position]['tpir']:.3f}"  # type: ignore[index]

    return [
        f"twins' probes: enrolled twice {tpir('twice', i)}, once {tpir('once', i)}; "
        f"everyone else: twins in the gallery {tpir('others_twice', i)}, none {tpir('others_once', i)}"
        for i in range(len(FPIRS[:3]))
    ]


if __name__ == "__main__":
    main()
