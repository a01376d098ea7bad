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
    """A rate that is not a fraction in (0, 1), or a threshold the score sample cannot support."""

    code = "calibration_error"


class ShardUnavailableError(MatcherError):
    """A shard of a sharded gallery did not answer (its actor died or is being restored), and
    the caller did not accept partial results: no answer is better than a silently partial one."""

    code = "shard_unavailable"

    def __init__(self, shards: list[int], detail: str = "") -> None:
        self.shards = sorted(shards)
        super().__init__(f"shard(s) {self.shards} unavailable{': ' + detail if detail else ''}")
