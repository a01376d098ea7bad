"""Federation: national nodes search each other's galleries under agreements, every message
signed by the node keys (RFC 9421 HTTP Message Signatures, Ed25519), each side auditing what it
asked and answered."""
