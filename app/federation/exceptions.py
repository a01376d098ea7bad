"""Refusals of the federation domain, each with its stable code."""

from __future__ import annotations

from app.core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
)


class NodeNotInitialised(Conflict):
    """No node key in the data folder: this node takes no part in a federation until
    ``readmit node init`` is run."""

    code = "node_not_initialised"


class NodeKeyInvalid(Exception):
    """The node key file is there but unusable: the service refuses to start rather than sign
    with a key its peers do not know."""


class UnknownPeer(NotFound):
    code = "not_found"


class DuplicatePeer(Conflict):
    code = "duplicate_peer"


class InvalidPeer(Invalid):
    code = "invalid_peer"


class InvalidSignature(Unauthenticated):
    """A message unsigned, signed by a key of no peer, signed over the wrong components, or
    altered since it was signed."""

    code = "invalid_signature"


class ReplayedMessage(Unauthenticated):
    """A signed message seen before (its nonce), or created outside the signature window."""

    code = "replayed_message"


class WrongCountry(Forbidden):
    """A peer speaking for another country than the one it is trusted for."""

    code = "wrong_country"


class NoAgreement(Forbidden):
    """This node has no agreement in force with the peer's country for the modality."""

    code = "no_agreement"


class MessageTooLarge(TooLarge):
    code = "payload_too_large"


class UnknownRemoteSearch(NotFound):
    code = "not_found"


class InvalidMessage(Invalid):
    code = "invalid_message"


class RequestInProgress(Unavailable):
    """A resent request that another process of this node is still running: the peer resends it
    later, and is then answered from that run."""

    code = "request_in_progress"
