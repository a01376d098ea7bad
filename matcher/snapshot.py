"""Snapshot files: one gallery index saved atomically and loaded only if intact.

Layout: ``MAGIC``, then the data sections back to back, then the manifest (UTF-8 JSON), then the
manifest's length (8 bytes little-endian) and ``TRAILER``. The manifest names each section's
offset and size and holds an XXH3-128 checksum over all section bytes and one over itself, so a
truncated, corrupt or foreign file is refused before any index is built from it. XXH3 hashes at
about 15 GB/s here (SHA-256: 1.6 GB/s), which keeps verification a small part of a load. A
sealed snapshot's sections are authenticated by their GCM tags instead: its reader does not
hash them, and its writer still does, so that a reader of an earlier version can load it.

A snapshot is written to a temporary file in the same folder, fsynced, renamed over the old one
and the folder fsynced: readers see the old snapshot or the new one, never a mix.

Given a :class:`~matcher.sealing.SnapshotKey`, every section is stored sealed (AES-256-GCM, see
:mod:`matcher.sealing`): the manifest, in clear, names the key and each section's nonce prefix
and plain size, and holds nothing biometric. A sealed snapshot is loaded only with its key, and
decrypted into memory; a clear one is refused when a key is given, so that encryption, once on,
never silently reads clear data.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from io import BufferedReader
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash

from matcher.errors import SnapshotError
from matcher.sealing import ALGORITHM, CHUNK, TAG_BYTES, SectionSealer, SnapshotKey, sealed_size
from matcher.tuning import run_in_parallel

log = logging.getLogger(__name__)

MAGIC = b"READMIT-SNAPSHOT-1\n"
TRAILER = b"\nREADMIT-END\n"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<Q")
_RESERVED = ("format_version", "sections", "payload_xxh3_128", "encryption")
"""Manifest keys of the file format itself; the others are the caller's."""


class PlainCopies(Protocol):
    """Where a sealed snapshot's opened sections can be shared (:mod:`matcher.plain_copies`)."""

    def map(
        self, snapshot: Path, manifest: dict[str, Any], nbytes: int, fill: Callable[[np.ndarray], None]
    ) -> np.ndarray:
        """``nbytes`` of the snapshot's opened sections, mapped: filled by ``fill`` (a uint8
        array) if no process of the node has done so yet. Raises OSError when it cannot."""
        ...


Section = np.ndarray | Sequence[np.ndarray]
"""A section's data: one array, or arrays of one dtype and row shape stored as their
concatenation along the first axis (a template store's two segments), without making it."""


def write_snapshot(
    path: Path, manifest: dict[str, Any], sections: Iterable[tuple[str, Section]], key: SnapshotKey | None = None
) -> None:
    """Write ``sections`` (name, data) and ``manifest`` to ``path`` atomically, sealed with
    ``key`` when one is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload_hash = xxhash.xxh3_128()
    layout: dict[str, dict[str, Any]] = {}
    try:
        with open(temporary, "wb") as out:
            out.write(MAGIC)
            for name, data in sections:
                parts = [data] if isinstance(data, np.ndarray) else list(data)
                dtype, shape = _stacked(name, parts)
                nbytes = int(np.prod(shape)) * dtype.itemsize
                section: dict[str, Any] = {"offset": out.tell(), "nbytes": nbytes, "dtype": dtype.str, "shape": shape}
                sealer, buffer = None, bytearray()
                if key is not None:
                    section.update(
                        nbytes=sealed_size(nbytes), plain_nbytes=nbytes, nonce_prefix=SectionSealer.new_prefix()
                    )
                    sealer = SectionSealer(key, manifest, section, name)
                    buffer = bytearray(min(nbytes, CHUNK) + TAG_BYTES)
                layout[name] = section
                for index, chunk in enumerate(_chunks(parts)):
                    if sealer is not None:
                        chunk = sealer.seal_into(index, chunk, buffer)
                    payload_hash.update(chunk)  # kept sealed too: earlier readers check it
                    out.write(chunk)
            body = dict(manifest, format_version=FORMAT_VERSION, sections=layout)
            if key is not None:
                body["encryption"] = {"algorithm": ALGORITHM, "key_id": key.key_id}
            body["payload_xxh3_128"] = payload_hash.hexdigest()
            encoded = json.dumps(body, sort_keys=True).encode()
            encoded_hash = xxhash.xxh3_128(encoded).hexdigest().encode()
            out.write(encoded + b"\n" + encoded_hash)
            out.write(_LENGTH.pack(len(encoded) + 1 + len(encoded_hash)))
            out.write(TRAILER)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _stacked(name: str, parts: list[np.ndarray]) -> tuple[np.dtype[Any], list[int]]:
    """The dtype and shape of ``parts`` stacked along their first axis."""
    if not parts:
        raise ValueError(f"section {name!r} has no data")
    first = parts[0]
    if any(part.dtype != first.dtype or part.shape[1:] != first.shape[1:] for part in parts):
        raise ValueError(f"section {name!r}: parts of different dtypes or row shapes")
    return first.dtype, [sum(part.shape[0] for part in parts), *first.shape[1:]]


def _chunks(parts: list[np.ndarray]) -> Iterator[memoryview]:
    """The parts' bytes, end to end, in chunks of ``CHUNK`` bytes (the last shorter): views of
    the parts where a chunk lies in one, a copy only for a chunk that straddles two."""
    views = [np.ascontiguousarray(part).reshape(-1).view(np.uint8).data for part in parts]
    pending = bytearray()
    for view in views:
        start = 0
        if pending:
            start = min(CHUNK - len(pending), view.nbytes)
            pending += view[:start]
            if len(pending) < CHUNK:
                continue
            yield memoryview(pending)
            pending = bytearray()
        whole_end = start + (view.nbytes - start) // CHUNK * CHUNK
        for offset in range(start, whole_end, CHUNK):
            yield view[offset : offset + CHUNK]
        pending += view[whole_end:]
    if pending:
        yield memoryview(pending)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a snapshot, checked, without reading the data (cheap staleness checks)."""
    with _open(path) as handle:
        return _manifest(handle, os.fstat(handle.fileno()).st_size)


class SnapshotReader:
    """Reads a snapshot's sections; :meth:`verify` must pass before anything read is trusted.
    ``key``: the snapshot must be sealed with it (and a sealed one cannot be read without).

    A clear snapshot's sections are read in the order they were written, hashed on the way, so
    that each byte is read once. A sealed snapshot's are all opened at the first read, their
    chunks decrypted in parallel (AES-GCM in ``cryptography`` releases the GIL), and not hashed:
    each chunk's GCM tag already authenticates it, and its associated data its place in the
    file, so a checksum pass would only read every byte once more. ``plain_copies``: where the
    opened sections are shared with the node's other processes (see
    :mod:`matcher.plain_copies`); None, or a folder that cannot take them, keeps them in this
    process's memory."""

    def __init__(self, path: Path, key: SnapshotKey | None = None, plain_copies: PlainCopies | None = None) -> None:
        self.path = Path(path)
        self._handle = _open(self.path)
        try:
            self.manifest = _manifest(self._handle, os.fstat(self._handle.fileno()).st_size)
            _check_key(self.path, self.manifest, key)
        except SnapshotError:
            self._handle.close()
            raise
        self._key = key
        self._plain_copies = plain_copies
        self._opened: dict[str, np.ndarray] | None = None
        self._hash = xxhash.xxh3_128()
        self._next_offset = len(MAGIC)

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def read(self, name: str) -> np.ndarray:
        """Section ``name`` as an array of its own (a sealed one: decrypted, and shared with
        the node's other processes when :attr:`plain_copies` is given)."""
        if self._key is not None:
            return self._sealed_section(name)
        section, dtype, shape = self._next(name)
        out = np.empty(shape, dtype=dtype)
        view = out.reshape(-1).view(np.uint8).data
        self._handle.seek(section["offset"])
        for start in range(0, view.nbytes, CHUNK):
            chunk = view[start : start + CHUNK]
            if self._handle.readinto(chunk) != chunk.nbytes:
                raise SnapshotError(f"{self.path}: truncated in section {name!r}")
            self._hash.update(chunk)
        return out

    def map(self, name: str) -> np.ndarray:
        """Map section ``name`` privately (copy-on-write): no copy is made, and writes to the
        array never reach the file. Hashed like :meth:`read`. A sealed section cannot be
        searched where it lies: it is decrypted instead, as :meth:`read` does."""
        if self._key is not None:
            return self._sealed_section(name)
        section, dtype, shape = self._next(name)
        if section["nbytes"] == 0:
            return np.empty(shape, dtype=dtype)
        mapped = np.memmap(self._handle, dtype=dtype, mode="c", offset=section["offset"], shape=shape)
        view = mapped.reshape(-1).view(np.uint8).data
        for start in range(0, view.nbytes, CHUNK):
            self._hash.update(view[start : start + CHUNK])
        return mapped

    def _sealed_section(self, name: str) -> np.ndarray:
        if name not in self.manifest["sections"]:
            raise SnapshotError(f"{self.path}: no section {name!r}")
        if self._opened is None:
            self._opened = self._open_sealed()
        return self._opened[name]

    def _open_sealed(self) -> dict[str, np.ndarray]:
        """Every section decrypted: into a shared copy when one can be had, else privately."""
        layout = plain_layout(self.manifest)
        for part in layout:
            section = self.manifest["sections"][part.name]
            if section.get("plain_nbytes") != part.nbytes or section["nbytes"] != sealed_size(part.nbytes):
                raise SnapshotError(f"{self.path}: section {part.name!r} has an inconsistent size")
        if self._plain_copies is not None:
            try:
                fill = partial(self._decrypt_into, layout)
                base = self._plain_copies.map(self.path, self.manifest, plain_nbytes(layout), fill)
            except OSError as error:  # full, or gone: this process decrypts its own copy
                log.warning(
                    "decrypting a snapshot privately: no shared copy (%s)",
                    error,
                    extra={"event": {"path": str(self.path)}},
                )
            else:
                return {part.name: part.view(base) for part in layout}
        arrays = {part.name: np.empty(part.shape, part.dtype) for part in layout}
        self._decrypt_all(layout, {name: array.reshape(-1).view(np.uint8) for name, array in arrays.items()})
        return arrays

    def _decrypt_into(self, layout: list[PlainSection], plain: np.ndarray) -> None:
        """Decrypt every section into ``plain`` (uint8), laid out as ``layout`` says."""
        self._decrypt_all(layout, {part.name: plain[part.start : part.start + part.nbytes] for part in layout})

    def _decrypt_all(self, layout: list[PlainSection], targets: dict[str, np.ndarray]) -> None:
        """Open every chunk of every section straight from the mapped file into its target, the
        chunks spread over the threads this process may use."""
        assert self._key is not None
        key, manifest = self._key, user_manifest(self.manifest)
        tasks: list[Callable[[], None]] = []
        for part in layout:
            section = self.manifest["sections"][part.name]
            if part.nbytes == 0:
                continue
            sealer = SectionSealer(key, manifest, section, part.name)
            stored = np.memmap(self._handle, np.uint8, mode="r", offset=section["offset"], shape=section["nbytes"])
            plain, where = targets[part.name].data, f"{self.path}: section {part.name!r}"
            for index, start in enumerate(range(0, part.nbytes, CHUNK)):
                end = min(start + CHUNK, part.nbytes)
                chunk = stored.data[start + index * TAG_BYTES : end + (index + 1) * TAG_BYTES]
                tasks.append(partial(sealer.open_into, index, chunk, plain[start:end], where))
        run_in_parallel(tasks)

    def _next(self, name: str) -> tuple[dict[str, Any], np.dtype[Any], tuple[int, ...]]:
        section = self._section(name)
        if section["offset"] != self._next_offset:
            raise SnapshotError(f"{self.path}: section {name!r} read out of order")
        dtype, shape = np.dtype(section["dtype"]), tuple(section["shape"])
        plain = int(np.prod(shape)) * dtype.itemsize
        if section.get("plain_nbytes", plain) != plain or section["nbytes"] != plain:
            raise SnapshotError(f"{self.path}: section {name!r} has an inconsistent size")
        self._next_offset = section["offset"] + section["nbytes"]
        return section, dtype, shape

    def verify(self) -> None:
        """Raise unless every section was read and (in clear) the payload checksum matches; a
        sealed snapshot's sections were all authenticated as they were opened."""
        if self._key is not None:
            if self._opened is None:
                raise SnapshotError(f"{self.path}: not every section was read")
            return
        expected_end = max((s["offset"] + s["nbytes"] for s in self.manifest["sections"].values()), default=len(MAGIC))
        if self._next_offset != expected_end:
            raise SnapshotError(f"{self.path}: not every section was read")
        if self._hash.hexdigest() != self.manifest["payload_xxh3_128"]:
            raise SnapshotError(f"{self.path}: checksum mismatch, the snapshot is corrupt")

    def _section(self, name: str) -> dict[str, Any]:
        try:
            section: dict[str, Any] = self.manifest["sections"][name]
        except KeyError:
            raise SnapshotError(f"{self.path}: no section {name!r}") from None
        return section


@dataclass(frozen=True)
class PlainSection:
    """Where a sealed section lies once opened into one buffer of all sections."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    start: int
    nbytes: int

    def view(self, plain: np.ndarray) -> np.ndarray:
        """The section as its array, a view of ``plain`` (uint8) without a copy."""
        return plain[self.start : self.start + self.nbytes].view(self.dtype).reshape(self.shape)


def plain_layout(manifest: dict[str, Any]) -> list[PlainSection]:
    """The sections in file order, each starting on a page of its own, so that every array of a
    shared copy is page-aligned and a write to one never touches another's pages."""
    layout, start = [], 0
    for name, section in sorted(manifest["sections"].items(), key=lambda item: item[1]["offset"]):
        dtype, shape = np.dtype(section["dtype"]), tuple(section["shape"])
        nbytes = int(np.prod(shape)) * dtype.itemsize
        layout.append(PlainSection(name, dtype, shape, start, nbytes))
        start += -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    return layout


def plain_nbytes(layout: list[PlainSection]) -> int:
    return layout[-1].start + layout[-1].nbytes if layout else 0


def user_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the writer's caller gave it, without the file format's own keys."""
    return {name: value for name, value in manifest.items() if name not in _RESERVED}


def _check_key(path: Path, manifest: dict[str, Any], key: SnapshotKey | None) -> None:
    sealed = manifest.get("encryption")
    if key is None and sealed is not None:
        raise SnapshotError(f"{path}: sealed with key {sealed.get('key_id')!r}, and no key was given")
    if key is not None and sealed is None:
        raise SnapshotError(f"{path}: stored in clear, and a sealed snapshot was expected")
    if (
        key is not None
        and sealed is not None
        and (sealed.get("algorithm"), sealed.get("key_id"))
        != (
            ALGORITHM,
            key.key_id,
        )
    ):
        raise SnapshotError(f"{path}: sealed with key {sealed.get('key_id')!r}, not {key.key_id!r}")


def _open(path: Path) -> BufferedReader:
    try:
        return open(path, "rb")
    except OSError as error:
        raise SnapshotError(f"{path}: cannot open snapshot: {error.strerror}") from error


def _manifest(handle: BufferedReader, size: int) -> dict[str, Any]:
    name = getattr(handle, "name", "snapshot")
    tail = len(TRAILER) + _LENGTH.size
    if size < len(MAGIC) + tail or handle.read(len(MAGIC)) != MAGIC:
        raise SnapshotError(f"{name}: not a readmit snapshot (bad header or too short)")
    handle.seek(size - tail)
    (length,) = _LENGTH.unpack(handle.read(_LENGTH.size))
    if handle.read(len(TRAILER)) != TRAILER or length > size - tail - len(MAGIC):
        raise SnapshotError(f"{name}: truncated snapshot (no valid trailer)")
    handle.seek(size - tail - length)
    encoded, _, encoded_hash = handle.read(length).rpartition(b"\n")
    if xxhash.xxh3_128(encoded).hexdigest().encode() != encoded_hash:
        raise SnapshotError(f"{name}: manifest checksum mismatch, the snapshot is corrupt")
    manifest: dict[str, Any] = json.loads(encoded)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(f"{name}: snapshot format {manifest.get('format_version')} is not supported")
    payload_end = size - tail - length
    for section_name, section in manifest["sections"].items():
        if section["offset"] + section["nbytes"] > payload_end:
            raise SnapshotError(f"{name}: section {section_name!r} runs past the payload")
    return manifest


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
