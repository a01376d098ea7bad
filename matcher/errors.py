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


class ShardPlacementError(MatcherError):
    """A sharded gallery's shards cannot all get the CPUs they ask for in the Ray cluster: it has
    too few, or other galleries' shards hold them. Raised within seconds, because Ray itself would
    keep the shards pending, and their caller waiting, until CPUs appear, which may be never."""

    code = "shards_unplaceable"

    def __init__(self, shards: int, cpus_per_shard: float, cpus_total: float, cpus_available: float) -> None:
        self.shards, self.cpus_per_shard = shards, cpus_per_shard
        self.cpus_needed = shards * cpus_per_shard
        self.cpus_total, self.cpus_available = cpus_total, cpus_available
        super().__init__(
            f"{shards} shards of {cpus_per_shard:g} CPU need {self.cpus_needed:g} CPUs; the Ray cluster has "
            f"{cpus_total:g}, of which {cpus_available:g} available"
        )
