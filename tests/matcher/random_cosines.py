"""The law of the cosine of two independent random unit vectors, known exactly: the non-mated
scores of the synthetic templates (matcher.synthetic, isotropic), against which a tail fit's
thresholds are checked at rates no sample reaches."""

import math

import numpy as np


def rate_above(score: float, dimension: int = 512) -> float:
    """P(cos > score): the density is proportional to (1 - t^2)^((d - 3) / 2) on [-1, 1],
    normalised by Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)); integrated numerically from score to 1."""
    t = np.linspace(score, 1.0, 200_001)
    log_norm = math.lgamma(dimension / 2) - 0.5 * math.log(math.pi) - math.lgamma((dimension - 1) / 2)
    density = np.exp(log_norm + (dimension - 3) / 2 * np.log(np.maximum(1.0 - t * t, 1e-300)))
    return float(np.trapezoid(density, t))


def unit_vectors(count: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
