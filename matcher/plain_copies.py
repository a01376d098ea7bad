"""One decrypted copy of each sealed snapshot per node, mapped by every process that serves it.

A sealed snapshot cannot be searched where it lies, so each process that loads one would
decrypt its own private copy: N processes, N copies of the largest thing they hold (2 GB at
1M x 512). Instead the first process to load a snapshot decrypts it into a file of a RAM-backed
folder (tmpfs or ramfs: the clear text is in memory, never on a disk), and every process, the
first included, maps that file copy-on-write from a read-only descriptor: the node holds one copy
in its page cache, a process's own later writes (a removal compacting rows) go to private pages,
and no process can alter what the others read.

A copy is named by the data folder (``namespace``), the snapshot file, the snapshot's change
number and a SHA-256 of its manifest (which names fresh nonces at every write), so that a copy of
any other state of the snapshot is never taken for it. It is written under a temporary name,
made read-only and renamed, under a per-snapshot lock, so that processes starting together
decrypt it once. Loading a newer snapshot removes the copies of older ones (mappings stay valid
until their process drops them); the last process of the namespace to close removes them all,
which every process tells by holding a shared lock on the namespace while it runs; and
copies whose processes were all killed before their stop are removed by the next process to
open the folder (:func:`sweep_abandoned`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)

RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
_COPY_SUFFIX = ".plain"
_NAMESPACE = re.compile(r"^\.?readmit-([0-9a-f]{16})-")


class NotRamBacked(ValueError):
    """The folder would put clear templates on a disk: it is not on tmpfs or ramfs."""


def filesystem_type(folder: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The type of the file system holding ``folder`` (its longest mount point), or None where
    the mount table cannot be read (not Linux)."""
    target = os.path.realpath(folder)
    best, kind = "", None
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


class SharedPlainCopies:
    """Decrypted snapshots of one data folder (``namespace``) in the RAM-backed ``folder``;
    raises NotRamBacked for any other folder. Open while the process serves; :meth:`close` at
    its stop."""

    def __init__(self, folder: Path, namespace: str) -> None:
        kind = filesystem_type(folder)
        if kind not in RAM_FILESYSTEMS:
            raise NotRamBacked(f"{folder} is on {kind or 'an unknown file system'}, not on tmpfs or ramfs")
        self.folder = Path(folder)
        self.prefix = f"readmit-{namespace}-"
        self._users: IO[bytes] | None = None
        """The namespace's users file, locked shared from the first map until :meth:`close`."""
        sweep_abandoned(self.folder)

    def _join(self) -> IO[bytes]:
        """A shared lock on the namespace's users file, held until :meth:`close`: on the file
        now at its path, not on one the last user removed while this process waited."""
        path = self._lock_path("users")
        while True:
            handle = open(path, "ab")  # noqa: SIM115 - held until close
            os.fchmod(handle.fileno(), 0o600)
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            handle.close()

    def map(
        self, snapshot: Path, manifest: dict[str, Any], nbytes: int, fill: Callable[[np.ndarray], None]
    ) -> np.ndarray:
        """The snapshot's ``nbytes`` of opened sections, mapped copy-on-write: from the node's
        copy, made now with ``fill`` (which writes them into a uint8 array) if there is none.
        Raises OSError when the folder cannot hold it (full), and whatever ``fill`` raises."""
        stem = _digest(os.path.realpath(snapshot))
        generation = int(manifest.get("change_seq", 0))
        path = self.folder / f"{self.prefix}{stem}-{generation}-{_digest(_canonical(manifest))}{_COPY_SUFFIX}"
        if nbytes == 0:
            return np.empty(0, np.uint8)
        if self._users is None:
            self._users = self._join()
        with self._locked(stem):
            if not path.exists() or path.stat().st_size != nbytes:
                self._write(path, nbytes, fill)
                log.info("shared a decrypted snapshot", extra={"event": {"snapshot": str(snapshot), "bytes": nbytes}})
            mapped = np.memmap(path, np.uint8, mode="c", shape=nbytes)
            self._remove_older(stem, generation, path)
        return mapped

    def close(self) -> list[Path]:
        """Stop using the copies; the last process of the namespace to have mapped one removes
        them all. Returns the files removed."""
        if self._users is None:
            return []
        removed: list[Path] = []
        try:
            fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another process of the data folder still maps them
        else:
            removed = sorted(self.folder.glob(f"{self.prefix}*"))
            for path in removed:  # the users file too: a process waiting for it joins a new one
                path.unlink(missing_ok=True)
        self._users.close()  # releases the lock, after the removal: a starting process waits
        self._users = None
        return removed

    def copies(self) -> list[Path]:
        """The namespace's decrypted copies now in the folder."""
        return sorted(self.folder.glob(f"{self.prefix}*{_COPY_SUFFIX}"))

    def _lock_path(self, name: str) -> Path:
        return self.folder / f"{self.prefix}{name}.lock"

    @contextmanager
    def _locked(self, stem: str) -> Iterator[None]:
        """One process at a time decrypts or removes the copies of one snapshot file."""
        with open(self._lock_path(stem), "ab") as handle:
            os.fchmod(handle.fileno(), 0o600)
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _write(path: Path, nbytes: int, fill: Callable[[np.ndarray], None]) -> None:
        """Reserve the pages first (a full tmpfs fails here with ENOSPC rather than killing the
        process with SIGBUS at a write through the mapping), fill, and publish by rename."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, nbytes)
                target = np.memmap(temporary, np.uint8, mode="r+", shape=nbytes)
                fill(target)
                del target
                os.fchmod(descriptor, 0o400)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def _remove_older(self, stem: str, generation: int, keep: Path) -> None:
        for path in self.folder.glob(f"{self.prefix}{stem}-*{_COPY_SUFFIX}"):
            other = path.name[len(f"{self.prefix}{stem}-") :].split("-", 1)[0]
            if path != keep and other.isdigit() and int(other) <= generation:
                path.unlink(missing_ok=True)


def sweep_abandoned(folder: Path) -> list[Path]:
    """Remove the files of every namespace in ``folder`` that no process uses, and return them.

    The last process of a namespace removes its copies at its stop; processes killed before it
    (SIGKILL, the out-of-memory killer, a crash) leave them behind, clear templates in memory
    until the host restarts, whether or not their data folder is ever served again. Every
    process that opens the folder sweeps them: a namespace is unused when its users file can be
    locked exclusively, and it stays locked while its files (half-written copies included) are
    removed, so that a process joining it meanwhile waits and joins a new one, as at a stop."""
    removed: list[Path] = []
    namespaces = {match.group(1) for path in folder.glob("*readmit-*") if (match := _NAMESPACE.match(path.name))}
    for namespace in sorted(namespaces):
        try:
            users = open(folder / f"readmit-{namespace}-users.lock", "ab")  # noqa: SIM115 - closed below
        except OSError:
            continue  # another account's: not ours to judge
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            users.close()  # in use
            continue
        try:
            for path in sorted([*folder.glob(f"readmit-{namespace}-*"), *folder.glob(f".readmit-{namespace}-*")]):
                with suppress(OSError):
                    path.unlink()
                    removed.append(path)
        finally:
            users.close()
    if removed:
        log.warning(
            "removed decrypted snapshots that no running process uses (left by processes that were killed)",
            extra={"event": {"files": len(removed), "folder": str(folder)}},
        )
    return removed


def namespace_of(data_folder: Path) -> str:
    """A data folder's namespace: copies of two data folders on one node never mix."""
    return _digest(os.path.realpath(data_folder))


def _canonical(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
