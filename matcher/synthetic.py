"""Realistic synthetic face templates for tests and benchmarks.

Real templates cannot be shipped, so tests and benchmarks draw them from a model whose score
distributions follow what is published for 512-d face models of the ArcFace class:

* Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (CVPR 2019,
  arXiv:1801.07698), figure of the angle distributions of positive and negative pairs on LFW,
  CFP-FP, AgeDB and YTF: negative (impostor) pairs cluster tightly around 90 degrees, a cosine
  near 0 with a spread of a few hundredths; positive (mated) pairs spread widely over roughly
  30 to 70 degrees, cosines around 0.35 to 0.85, centred near 0.6 for harder pairs.
* For isotropic d-dimensional unit vectors the impostor cosine has standard deviation
  1/sqrt(d), 0.044 at d = 512, which matches that "few hundredths".

Model: each identity has a centre on the unit sphere; a sample is ``normalise(centre + s * noise)``
with isotropic Gaussian noise of unit expected norm and a per-sample spread ``s`` drawn from a
log-normal law (capture quality varies). Two samples of one identity then have a cosine of about
``1 / sqrt((1 + s1^2)(1 + s2^2))``; the default spreads give mated cosines centred near 0.6 with a
standard deviation near 0.1. With ``spectrum_decay > 0`` centres are drawn from an anisotropic
Gaussian whose per-dimension scale decays as ``(j + 1) ** -spectrum_decay``: real templates are not
uniform on the sphere, impostor scores then spread wider and shift, as they do for real models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticSet:
    """An enrolled gallery plus mated and non-mated probe sets.

    ``gallery`` (n, d) float32 with ``gallery_ids`` (n,) record ids (several samples per record);
    ``mated_probes`` with ``mated_ids``, the enrolled record each probe belongs to;
    ``nonmated_probes``: people who are not enrolled.
    """

    gallery: np.ndarray
    gallery_ids: np.ndarray
    mated_probes: np.ndarray
    mated_ids: np.ndarray
    nonmated_probes: np.ndarray


@dataclass(frozen=True)
class FaceModel:
    """Parameters of the synthetic template generator (see the module docstring)."""

    dimension: int = 512
    spread_median: float = 0.8
    spread_sigma: float = 0.35
    spectrum_decay: float = 0.0

    def _centres(self, rng: np.random.Generator, count: int) -> np.ndarray:
        centres = rng.standard_normal((count, self.dimension), dtype=np.float32)
        if self.spectrum_decay > 0:
            scale = (np.arange(self.dimension, dtype=np.float32) + 1) ** -self.spectrum_decay
            centres *= scale / np.sqrt(np.mean(scale**2))
        return _normalise(centres)

    def _samples(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        spreads = self.spread_median * np.exp(
            self.spread_sigma * rng.standard_normal(centres.shape[0], dtype=np.float32)
        )
        noise = rng.standard_normal(centres.shape, dtype=np.float32) / np.sqrt(self.dimension)
        return _normalise(centres + spreads[:, None] * noise)


def make_synthetic_set(
    identities: int,
    samples_per_identity: int = 1,
    mated_probes: int = 100,
    nonmated_probes: int = 100,
    model: FaceModel | None = None,
    seed: int = 0,
    chunk: int = 100_000,
    mated_ids: np.ndarray | None = None,
) -> SyntheticSet:
    """Draw a gallery of ``identities`` records with ``samples_per_identity`` samples each,
    ``mated_probes`` fresh samples of enrolled identities and ``nonmated_probes`` samples of
    people not enrolled. Record ids are 0..identities-1. Generated in chunks to bound memory.
    ``mated_ids`` (sorted) chooses the identities probed instead of ``mated_probes`` random ones
    (see :func:`make_linked_sets`)."""
    model = model or FaceModel()
    rng = np.random.default_rng(seed)
    gallery = np.empty((identities * samples_per_identity, model.dimension), dtype=np.float32)
    if mated_ids is None:
        mated_ids = np.sort(rng.choice(identities, size=min(mated_probes, identities), replace=False))
    mated = np.empty((mated_ids.size, model.dimension), dtype=np.float32)
    for start in range(0, identities, chunk):
        stop = min(identities, start + chunk)
        centres = model._centres(rng, stop - start)
        for sample in range(samples_per_identity):
            rows = np.arange(start, stop) * samples_per_identity + sample
            gallery[rows] = model._samples(rng, centres)
        inside = (mated_ids >= start) & (mated_ids < stop)
        if inside.any():
            mated[inside] = model._samples(rng, centres[mated_ids[inside] - start])
    nonmated = model._samples(rng, model._centres(rng, nonmated_probes))
    gallery_ids = np.repeat(np.arange(identities, dtype=np.int64), samples_per_identity)
    return SyntheticSet(gallery, gallery_ids, mated, mated_ids.astype(np.int64), nonmated)


def make_linked_sets(
    identities: int, models: list[FaceModel], mated_probes: int = 100, nonmated_probes: int = 100, seed: int = 0
) -> list[SyntheticSet]:
    """One set per modality (``models``), of the same people: record ``i`` is the same person in
    every set, mated probe ``j`` of every set is a sample of the same enrolled person, non-mated
    probe ``j`` of every set a sample of the same person not enrolled. The modalities' samples
    are drawn independently (independent noise, independent feature spaces)."""
    rng = np.random.default_rng(seed)
    mated_ids = np.sort(rng.choice(identities, size=min(mated_probes, identities), replace=False))
    return [
        make_synthetic_set(
            identities, 1, nonmated_probes=nonmated_probes, model=model, seed=seed + 1 + i, mated_ids=mated_ids
        )
        for i, model in enumerate(models)
    ]


@dataclass(frozen=True)
class ScoreSummary:
    """Mean and standard deviation of mated and non-mated scores, and how much they overlap."""

    mated_mean: float
    mated_std: float
    nonmated_mean: float
    nonmated_std: float
    overlap: float
    """Fraction of mated scores below the highest non-mated score (0: perfectly separable)."""


def summarise_scores(mated: np.ndarray, nonmated: np.ndarray) -> ScoreSummary:
    return ScoreSummary(
        mated_mean=float(np.mean(mated)),
        mated_std=float(np.std(mated)),
        nonmated_mean=float(np.mean(nonmated)),
        nonmated_std=float(np.std(nonmated)),
        overlap=float(np.mean(mated <= np.max(nonmated))),
    )


def pair_scores(data: SyntheticSet, pairs: int = 20_000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of mated pairs (each mated probe with its record's first sample) and of random
    non-mated pairs (non-mated probes against random gallery samples)."""
    rng = np.random.default_rng(seed)
    first_row = np.searchsorted(data.gallery_ids, data.mated_ids)
    mated = np.einsum("ij,ij->i", data.mated_probes, data.gallery[first_row])
    probes = data.nonmated_probes[rng.integers(0, data.nonmated_probes.shape[0], pairs)]
    others = data.gallery[rng.integers(0, data.gallery.shape[0], pairs)]
    return mated, np.einsum("ij,ij->i", probes, others)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
