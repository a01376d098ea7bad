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
    out, faults = screen_templates(check_shape(templates, template_format, what=what), template_format, normalise)
    if faults.any():
        raise InvalidTemplateError(fault_message(faults, what))
    return out


def check_shape(templates: npt.ArrayLike, template_format: TemplateFormat, *, what: str = "template") -> np.ndarray:
    """The first half of :func:`prepare_templates`: a C-contiguous float32 (n, d) array of the
    format's dimension, its values not yet looked at."""
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
    return np.ascontiguousarray(array, dtype=np.float32)


NON_FINITE = 1
ZERO_NORM = 2


def screen_templates(
    templates: np.ndarray, template_format: TemplateFormat, normalise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The second half of :func:`prepare_templates`, row by row, for a block holding many
    records' templates: the rows normalised as :func:`prepare_templates` does (the same bits
    as one row at a time), and each row's fault (0, ``NON_FINITE`` or ``ZERO_NORM``), so that a
    caller refuses the rows at fault and keeps the others."""
    faults = np.where(np.isfinite(templates).all(axis=1), 0, NON_FINITE).astype(np.int8)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(templates, axis=1)
    faults[(faults == 0) & ~(norms > _NORM_FLOOR)] = ZERO_NORM
    if not (normalise and template_format.metric is Metric.COSINE):
        return templates, faults
    safe = np.where(faults == 0, norms, 1).astype(np.float32)
    return templates / safe[:, None], faults


def fault_message(faults: np.ndarray, what: str = "template") -> str:
    """The message :func:`prepare_templates` gives for these rows' faults: the first row with
    NaN or Inf, else the first with zero norm."""
    non_finite = faults == NON_FINITE
    if non_finite.any():
        return f"{what} {int(np.argmax(non_finite))} contains NaN or Inf"
    return f"{what} {int(np.argmax(faults == ZERO_NORM))} has zero norm"


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
