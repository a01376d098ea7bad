"""Principals by the hash of their API key, kept for a few seconds (a
:class:`~app.core.cache.CommittedRowsCache` keyed by the hash).

Every request checks its key; reading the principal from the database each time cost more than
the rest of the check, and sat beside the single SQLite writer. Every committed change to a
principal (a revocation, a peer removed) empties the cache: through this process at its commit,
so a revoked key fails on its very next request; through another process or node on one
PostgreSQL when its notification on :data:`CHANNEL` arrives, delivered at that commit. Should a
notification be lost, an entry's age (``READMIT_KEY_CACHE_S``) bounds how long a revoked key
may still be accepted there.
"""

from __future__ import annotations

WATCHED = {"principals": {"update", "delete"}}
"""The writes that change what a key check reads (a new principal is not in the cache yet)."""

CHANNEL = "readmit_api_keys"
"""PostgreSQL: notified by every transaction that made such a write."""
