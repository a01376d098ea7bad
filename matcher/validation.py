"""Checks every array before it reaches FAISS.

FAISS trusts its input: a NaN, a wrong stride or a zero vector goes in silently and corrupts every
later score. So templates and probes are checked here, and the index is never touched when a
check fails.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from matcher.errors import InvalidTemplateError
from matcher.formats import Metric, TemplateFormat

_NORM_FLOOR = 1e-12


def prepare_templates(
    templates: npt.ArrayLike, template_format: TemplateFormat, *, what: str = "template", normalise: bool = True
) -> np.ndarray:
    """Return templates as a C-contiguous float32 (n, d) array, unit-normalised for cosine
    unless ``normalise`` is False (a check before the arrays go to where they are stored: one
    normalisation only, so that every copy of a template is the same to the bit).

    Raises :class:`InvalidTemplateError` naming the first problem found: empty batch, wrong rank,
    non-numeric dtype, wrong dimension, NaN or Inf, or a zero vector.
    """
    array = np.asarray(templates)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidTemplateError(f"{what}s must be numeric, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise InvalidTemplateError(f"{what}s must be a 2-d array (n, d), got {array.ndim} dimensions")
    if array.shape[0] == 0:
        raise InvalidTemplateError(f"empty batch: no {what}s given")
    if array.shape[1] != template_format.dimension:
        raise InvalidTemplateError(
            f"{what} dimension {array.shape[1]} does not match the format's {template_format.dimension}"
        )
    out = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise InvalidTemplateError(f"{what} {int(np.argmin(finite))} contains NaN or Inf")
    norms = np.linalg.norm(out, axis=1)
    if (norms <= _NORM_FLOOR).any():
        raise InvalidTemplateError(f"{what} {int(np.argmax(norms <= _NORM_FLOOR))} has zero norm")
    if normalise and template_format.metric is Metric.COSINE:
        out = out / norms[:, None].astype(np.float32)
    return out


def prepare_ids(ids: npt.ArrayLike, count: int | None = None, *, what: str = "record id") -> np.ndarray:
    """Return ids as a contiguous int64 array, checking their count and that none is negative."""
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidTemplateError(f"{what}s must be a 1-d integer array")
    if count is not None and array.shape[0] != count:
        raise InvalidTemplateError(f"{array.shape[0]} {what}s given for {count} rows")
    if (array < 0).any():
        raise InvalidTemplateError(f"{what}s must not be negative")
    return np.ascontiguousarray(array, dtype=np.int64)
