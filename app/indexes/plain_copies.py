"""The node's shared decrypted snapshots, as the service configures them (see
:mod:`matcher.plain_copies`).

Sharing is an economy, never a condition of service: a folder that is not RAM-backed (it would
put clear templates on a disk), or that cannot be used, leaves every process decrypting its own
copy, with one log line saying why.
"""

from __future__ import annotations

import logging

from app.core.config import Settings
from matcher.plain_copies import NotRamBacked, SharedPlainCopies, namespace_of, sweep_abandoned

log = logging.getLogger(__name__)


def open_plain_copies(settings: Settings) -> SharedPlainCopies | None:
    """The shared copies of this data folder's sealed snapshots, or None when snapshots are
    clear (the page cache already shares them), sharing is off, the indexes live on Ray, or the
    folder cannot take clear templates.

    Unless told, sharing is on only when several processes serve the folder: one process alone
    has nobody to share with, and decrypting into its own memory rather than into a tmpfs file
    made a 1M-template start 0.6 s shorter (1.35-1.6 s against 2.0-2.2 s to load the index)."""
    if not (settings.encrypt_at_rest and settings.matcher_backend == "local"):
        return None
    share = settings.share_decrypted_indexes
    if share is None:
        share = settings.processes > 1
    if not share:
        sweep_abandoned(settings.shared_memory_dir)  # what killed processes of the node left there
        return None
    try:
        return SharedPlainCopies(settings.shared_memory_dir, namespace_of(settings.data_dir))
    except (NotRamBacked, OSError) as error:
        log.warning(
            "each process decrypts its own copy of the indexes: %s",
            error,
            extra={"event": {"shared_memory_dir": str(settings.shared_memory_dir)}},
        )
        return None
