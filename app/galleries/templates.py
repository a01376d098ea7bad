"""Templates as front doors receive them (JSON floats, base64 float32, arrays read from a file)
and as they are stored (little-endian float32 bytes), checked and normalised by the matcher's
own validation."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.galleries.exceptions import InvalidTemplate, TooManyTemplates
from matcher import InvalidTemplateError, TemplateFormat, prepare_templates
from matcher.validation import check_shape

LITTLE_FLOAT32 = np.dtype("<f4")


@dataclass(frozen=True)
class EncodedTemplates:
    """One person's samples as received, exactly one of: rows of numbers (JSON floats, or an
    array from a file) or base64 strings of little-endian float32. Decoded by the use case, so
    that a bad record is refused on its own with a code, not the whole request."""

    floats: Sequence[Sequence[float]] | np.ndarray | None = None
    base64: Sequence[str] | None = None

    def decode(self, fmt: TemplateFormat, limit: int, what: str = "template") -> np.ndarray:
        """A validated (n, d) float32 array, normalised for cosine formats."""
        array = self.unchecked(fmt, limit, what)
        try:
            return prepare_templates(array, fmt, what=what)
        except InvalidTemplateError as error:
            raise InvalidTemplate(str(error)) from error

    def unchecked(self, fmt: TemplateFormat, limit: int, what: str = "template") -> np.ndarray:
        """The (n, d) float32 array of the format's dimension, its values not yet checked: for
        a caller that checks many records' templates in one block (``screen_templates``)."""
        if (self.floats is None) == (self.base64 is None):
            raise InvalidTemplate(f"give {what}s either as JSON floats or as base64, exactly one of them")
        count = len(self.floats if self.floats is not None else self.base64 or [])
        if count > limit:
            raise TooManyTemplates(f"{count} {what}s given, at most {limit} allowed")
        try:
            if isinstance(self.floats, np.ndarray):  # read from a file: its shape says it all
                array = self.floats
            elif self.floats is not None:
                if any(len(row) != fmt.dimension for row in self.floats):
                    raise InvalidTemplateError(f"{what} dimension does not match the format's {fmt.dimension}")
                with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused as not finite just after
                    array = np.asarray(self.floats, dtype=np.float32)
            else:
                raw = b"".join(_decode_one(text, fmt.dimension, what) for text in self.base64 or [])
                array = np.frombuffer(raw, dtype=LITTLE_FLOAT32).reshape(-1, fmt.dimension)
            return check_shape(array, fmt, what=what)
        except (InvalidTemplateError, TypeError, ValueError) as error:
            raise InvalidTemplate(str(error)) from error


def decode_single_base64(batch: Sequence[EncodedTemplates], dimension: int) -> np.ndarray | None:
    """When each of ``batch`` is one base64 template of ``dimension`` float32 (a bulk client's
    usual call), all of them as one unchecked (n, d) array: one ``frombuffer`` over the joined
    bytes instead of an array per record. Otherwise None, and the caller decodes record by
    record, which names each one's error."""
    if not batch:
        return None
    raws = []
    for templates in batch:
        texts = templates.base64
        if templates.floats is not None or texts is None or len(texts) != 1:
            return None
        try:
            raws.append(_decode_one(texts[0], dimension, "template"))
        except InvalidTemplateError:
            return None
    return np.frombuffer(b"".join(raws), dtype=LITTLE_FLOAT32).reshape(len(raws), dimension)


def _decode_one(text: str, dimension: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidTemplateError(f"{what} is not valid base64") from error
    if len(raw) != dimension * 4:
        raise InvalidTemplateError(
            f"{what} has {len(raw)} bytes, {dimension * 4} expected ({dimension} little-endian float32)"
        )
    return raw


def to_bytes(template: np.ndarray) -> bytes:
    return template.astype(LITTLE_FLOAT32, copy=False).tobytes()


def from_bytes(rows: list[bytes], dimension: int) -> np.ndarray:
    return np.frombuffer(b"".join(rows), dtype=LITTLE_FLOAT32).reshape(-1, dimension).astype(np.float32)
