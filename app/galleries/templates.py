"""Templates as they arrive over the API (JSON floats or base64 float32) and as they are stored
(little-endian float32 bytes), checked and normalised by the matcher's own validation."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from app.core.errors import Invalid
from matcher import InvalidTemplateError, TemplateFormat, prepare_templates

LITTLE_FLOAT32 = np.dtype("<f4")


def decode_templates(
    fmt: TemplateFormat,
    floats: list[list[float]] | None,
    b64: list[str] | None,
    limit: int,
    what: str = "template",
) -> np.ndarray:
    """Turn a request's templates into a validated (n, d) float32 array; raises Invalid with
    code ``invalid_template`` (or ``too_many_templates``) naming the problem."""
    if (floats is None) == (b64 is None):
        raise Invalid(f"give {what}s either as JSON floats or as base64, exactly one of them", code="invalid_template")
    count = len(floats if floats is not None else b64 or [])
    if count > limit:
        raise Invalid(f"{count} {what}s given, at most {limit} allowed", code="too_many_templates")
    try:
        if floats is not None:
            if any(len(row) != fmt.dimension for row in floats):
                raise InvalidTemplateError(f"{what} dimension does not match the format's {fmt.dimension}")
            array = np.asarray(floats, dtype=np.float32)
        else:
            array = (
                np.vstack([_decode_one(text, fmt.dimension, what) for text in b64 or []])
                if b64
                else np.empty((0, fmt.dimension), np.float32)
            )
        return prepare_templates(array, fmt, what=what)
    except InvalidTemplateError as error:
        raise Invalid(str(error), code="invalid_template") from error


def _decode_one(text: str, dimension: int, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidTemplateError(f"{what} is not valid base64") from error
    if len(raw) != dimension * 4:
        raise InvalidTemplateError(
            f"{what} has {len(raw)} bytes, {dimension * 4} expected ({dimension} little-endian float32)"
        )
    return np.frombuffer(raw, dtype=LITTLE_FLOAT32).astype(np.float32)


def to_bytes(template: np.ndarray) -> bytes:
    return template.astype(LITTLE_FLOAT32, copy=False).tobytes()


def from_bytes(rows: list[bytes], dimension: int) -> np.ndarray:
    return np.frombuffer(b"".join(rows), dtype=LITTLE_FLOAT32).reshape(-1, dimension).astype(np.float32)
