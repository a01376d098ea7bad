"""Read ahead of a consumer: the next items of a slow source, produced on a thread while the
current one is used.

Bulk enrolment reads and parses a batch of records (CSV, arrays: Python work holding the GIL)
and then writes it (the database driver's executemany, COPY and COMMIT, which release it).
Reading batch k+1 while batch k is written overlaps the two instead of adding them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``source``'s items in order, up to ``depth`` of them read ahead on a thread. An error of
    the source is raised here, at the item where it happened; a consumer that stops early stops
    the reader too."""
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_END)
        except BaseException as error:  # handed to the consumer, raised where it reads
            items.put(_Failed(error))

    reader = threading.Thread(target=read, name="prefetch", daemon=True)
    reader.start()
    try:
        while (item := items.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join(timeout=5)
