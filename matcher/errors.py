"""Exceptions raised by the matching engine.

Each carries a stable ``code`` so that callers (the web service, a CLI, a notebook) can react to
the kind of problem without parsing messages.
"""


class MatcherError(Exception):
    """Base class of every error the matcher raises on purpose."""

    code = "matcher_error"


class InvalidTemplateError(MatcherError, ValueError):
    """A template or probe array cannot be used: wrong shape, dtype, dimension, NaN/Inf, zero norm."""

    code = "invalid_template"


class SnapshotError(MatcherError):
    """A snapshot file is missing, truncated, corrupt or of another format: never load it."""

    code = "snapshot_invalid"


class CalibrationError(MatcherError, ValueError):
    """A threshold was asked for that the score sample cannot support."""

    code = "calibration_error"
