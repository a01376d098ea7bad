"""Fusion benchmark: two modalities fused per person against each modality alone, at one FPIR.

Matcher level, no service: two linked synthetic galleries (record i is the same person in both)
with different score distributions (dimension, spread of mated scores, anisotropy), each
calibrated like the service calibrates a gallery (leave-one-out non-mated searches, cohort-margin
decision scores). Mated searches probe enrolled people in both modalities; held-out non-mated
searches probe people enrolled in neither. Printed: FNIR at the target FPIR of each modality alone
(its single-modality threshold) and of the fusion (matcher/score_fusion.py), and the FPIR each
threshold achieves on the held-out non-mated searches (the goal: within a factor 2 of the target).
The last row shows what the threshold would achieve if it were read as Fisher's sum of
independent draws (the rule the fusion does not use, see matcher/score_fusion.py).

    python benchmarks/fusion_bench.py                    # 20k people, 40k non-mated searches
    python benchmarks/fusion_bench.py --people 5000 --nonmated 20000 --fpir 0.01
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_json, print_table

from matcher import Calibration, CohortMargin, GalleryIndex, Metric, TemplateFormat, leave_one_out_decision_scores
from matcher.score_fusion import NonmatedTail, fuse_rows, fused_threshold
from matcher.synthetic import FaceModel, make_linked_sets

DECISION = CohortMargin()
K = 30
MODELS = {
    "face": FaceModel(dimension=128, spread_median=1.0),
    "finger": FaceModel(dimension=96, spread_median=0.9, spread_sigma=0.5, spectrum_decay=0.4),
}


def fisher_threshold(fpir: float) -> float:
    """t with P(Gamma(2, 1) >= t) = fpir: the sum of two independent Exp(1) draws."""
    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if (1 + middle) * math.exp(-middle) > fpir else (low, middle)
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--mated", type=int, default=2000)
    parser.add_argument("--nonmated", type=int, default=40_000)
    parser.add_argument("--calibration", type=int, default=2000, help="leave-one-out searches per gallery")
    parser.add_argument("--fpir", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    sets = make_linked_sets(
        args.people, list(MODELS.values()), mated_probes=args.mated, nonmated_probes=args.nonmated, seed=args.seed
    )
    mated = sets[0].mated_ids
    rows, tails, figures = [], [], {}
    table: list[tuple[str, str]] = []
    for name, data in zip(MODELS, sets, strict=True):
        index = GalleryIndex(TemplateFormat(name, data.gallery.shape[1], Metric.COSINE))
        index.add(data.gallery_ids, data.gallery)
        sample = leave_one_out_decision_scores(DECISION, index.search, *index.sample_templates(args.calibration))
        tails.append(NonmatedTail.fit(sample))
        result = index.search(np.vstack([data.mated_probes, data.nonmated_probes]), k=DECISION.depth + K)
        ids, decisions = result.record_ids, DECISION.scores(result)
        rows.append((ids, decisions))
        threshold = Calibration(sample, clamp=True).thresholds_at_rate(args.fpir).match
        mate = np.where(ids[: mated.size] == mated[:, None], decisions[: mated.size], -np.inf).max(axis=1)
        fnir, fpir = float(np.mean(mate < threshold)), float(np.mean(decisions[mated.size :, 0] >= threshold))
        figures[name] = {"fnir": fnir, "achieved_fpir": fpir}
        table.append((f"{name} alone", f"FNIR {fnir:.4f}   achieved FPIR {fpir:.5f}"))

    fused = fuse_rows([ids for ids, _ in rows], [decisions for _, decisions in rows], tails)
    best_nonmated = np.array([scores[0] if scores.size else 0.0 for _, scores in fused[mated.size :]])
    for label, threshold in (
        ("fused", fused_threshold(args.fpir, len(MODELS))),
        ("fused, Fisher sum threshold", fisher_threshold(args.fpir)),
    ):
        found = [
            bool(np.any((people == person) & (scores >= threshold)))
            for person, (people, scores) in zip(mated, fused[: mated.size], strict=True)
        ]
        fnir, fpir = 1 - float(np.mean(found)), float(np.mean(best_nonmated >= threshold))
        figures[label] = {"fnir": fnir, "achieved_fpir": fpir, "threshold": threshold}
        table.append((label, f"FNIR {fnir:.4f}   achieved FPIR {fpir:.5f}   (threshold {threshold:.2f})"))

    print_table(
        f"FNIR at FPIR {args.fpir:g}: {args.people} people in two linked galleries, {mated.size} mated and "
        f"{args.nonmated} held-out non-mated searches, {args.calibration} calibration searches a gallery",
        table,
    )
    ratio = figures["fused"]["achieved_fpir"] / args.fpir
    print(f"\n  fused achieved FPIR / target = {ratio:.2f} (goal: 0.5 to 2)   [{time.perf_counter() - started:.0f} s]")
    print_json({"fpir": args.fpir, "people": args.people, "fused_fpir_ratio": ratio, **figures})


if __name__ == "__main__":
    main()
