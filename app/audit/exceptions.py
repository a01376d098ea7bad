"""Refusals of the audit domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import Conflict, Invalid, NotFound, Unavailable


class UnknownEvent(NotFound):
    code = "not_found"


class TreeTooSmall(Conflict):
    """A proof asked of a tree the log has not reached yet: the same request succeeds later."""

    code = "tree_size_out_of_range"


class InvalidProofRange(Invalid):
    """An event beyond the tree it is to be proved in, or a consistency proof backwards."""

    code = "invalid_proof_range"


class NoCheckpoint(Unavailable):
    """The sequencer has not signed a first checkpoint yet (just after start or upgrade)."""

    code = "no_checkpoint_yet"


class SigningKeyMissing(Exception):
    """No usable signing key where the settings say: the service refuses to start rather than
    run a log nobody can verify."""


class SigningKeyMismatch(Unavailable):
    """The log's checkpoints were signed with another key than this node's: a node of a
    several-node deployment given a key of its own would sign a second, unverifiable history."""

    code = "audit_key_mismatch"
