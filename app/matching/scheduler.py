"""Earliest-deadline-first queue of searches, served by worker threads with micro-batching.

A worker takes the queued search whose case deadline is nearest, with the other queued searches
aimed at the same galleries (up to ``max_batch``), and runs them as one batch at once. It never
waits for company: a lone search runs as soon as a worker is free, and searches that arrive
while the workers are busy matching queue up and leave together in the next batch, so batches
grow with the load and cost nothing without it. Waiters (an HTTP call within its ``wait_ms``) are
woken when their search's batch ends, whatever its outcome.

A worker takes its batch only once it holds a matching slot, and gives the slot back as soon as
its batch is matched, before writing the results. With one slot (a local index: one batch's
search already takes every core) the matcher runs one batch at a time, each taking everything
queued meanwhile, while the other workers write the batches before. Measured on PostgreSQL at
200k exact with 32 clients (2 vCPUs): with both workers matching at once, batches averaged 7.9
searches and 214 ms, their OpenMP threads contending for the cores, and the service answered
62/s; with one slot, 12.2 searches and 119 ms, and 99/s. Several processes on a node share
one turn besides (app/matching/node_turn.py): a worker with searches queued waits for it before
taking its batch, which then holds what queued meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from app.matching.node_turn import NodeTurn

log = logging.getLogger(__name__)


class MatchingTurn(Protocol):
    """A batch's turn at the matcher: the process's matching slot and, with several processes,
    the node's turn."""

    def give_back(self) -> None:
        """Let the next batch match (once this one is matched, or while it waits for something
        else); asked again, nothing more happens."""

    def take_back(self) -> None:
        """Take the turn again after giving it back before matching (waits for the batch that
        holds it); nothing happens if this batch holds it."""


@dataclass(order=True)
class _Entry:
    priority: float
    order: int
    search_id: int = field(compare=False)
    searched_galleries: tuple[int, ...] = field(compare=False)


class Scheduler:
    def __init__(
        self,
        run: Callable[[list[int], MatchingTurn], None],
        workers: int,
        max_batch: int,
        policy: Literal["edf", "fifo"] = "edf",
        matching_slots: int = 1,
        node_turn: NodeTurn | None = None,
    ) -> None:
        """``run(search_ids, turn)`` runs a batch and gives ``turn`` back once its matching is
        done (it is given back at the latest when ``run`` returns). ``matching_slots``:
        batches matched at once, one for a local index, more when shards elsewhere match them.
        ``policy`` ``fifo`` serves in arrival order: it exists to measure EDF against it.
        ``node_turn``: the turn this process shares with the node's others, with one slot; it
        is closed when the scheduler stops."""
        self._run = run
        self._matching = threading.Semaphore(matching_slots)
        self._node_turn = node_turn
        self.policy = policy
        self._workers_count = workers
        self.max_batch = max_batch
        self._heap: list[_Entry] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._waiters: dict[int, list[Callable[[], None]]] = {}
        """Per queued or running search, what to call when its batch has run."""
        self._paused = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._after_batch: list[Callable[[], None]] = []
        self.batches_run = 0

    # -- producers ----------------------------------------------------------------------------

    def submit(self, search_id: int, deadline: datetime, searched_galleries: tuple[int, ...]) -> None:
        with self._cond:
            self._waiters.setdefault(search_id, [])
            order = next(self._counter)
            priority = deadline.timestamp() if self.policy == "edf" else float(order)
            heapq.heappush(self._heap, _Entry(priority, order, search_id, searched_galleries))
            self._cond.notify()

    def when_done(self, search_id: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the search's batch has run, whatever its outcome, from the
        worker that ran it; at once if no batch is to run it (it has run, or was never
        submitted). An event loop waits with a callback that wakes it, a thread with
        :meth:`wait`."""
        with self._cond:
            waiting = self._waiters.get(search_id)
            if waiting is not None:
                waiting.append(callback)
                return
        callback()

    def wait(self, search_id: int, timeout_s: float) -> bool:
        """Block until the search's batch has run (True) or ``timeout_s`` passes (False)."""
        done = threading.Event()
        self.when_done(search_id, done.set)
        return done.wait(timeout_s)

    def after_batch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from the worker after each batch: room has freed up."""
        self._after_batch.append(callback)

    @property
    def depth(self) -> int:
        return len(self._heap)

    @property
    def room(self) -> int:
        """Searches it can take without any waiting longer than a round of batches: one full
        batch per worker, less those already queued. Searches claimed from the shared queue
        beyond it would be held here while other processes could run them."""
        return max(0, self._workers_count * self.max_batch - self.depth)

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self._workers_count):
            thread = threading.Thread(target=self._work, name=f"search-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._node_turn is not None:
            self._node_turn.close()

    def pause(self) -> None:
        """Hold every worker after its current batch (operators, and tests of the order)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # -- workers ------------------------------------------------------------------------------

    def _take_batch(self, slot: _Slot) -> list[_Entry] | None:
        """Wait for searches, take the matching turn, then take the batch: what queued while
        another batch was matched leaves together. A worker waiting for searches holds no turn,
        so that a batch that gave its turn back while it waited (app/matching/executor.py) can
        always take it again."""
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not self._heap):
                    slot.give_back()
                    self._cond.wait()
                if self._stopping:
                    return None
                if slot.holds_turn:
                    first = heapq.heappop(self._heap)
                    return [first, *self._take_same_galleries(first.searched_galleries, self.max_batch - 1)]
            slot.take_back()  # outside the condition: searches keep queueing meanwhile

    def _take_same_galleries(self, galleries: tuple[int, ...], room: int) -> list[_Entry]:
        same = sorted(entry for entry in self._heap if entry.searched_galleries == galleries)[:room]
        if same:
            taken = {id(entry) for entry in same}
            self._heap = [entry for entry in self._heap if id(entry) not in taken]
            heapq.heapify(self._heap)
        return same

    def _work(self) -> None:
        while True:
            slot = _Slot(self._matching, self._node_turn)
            batch = self._take_batch(slot)
            if batch is None:
                slot.give_back()
                return
            try:
                self._run([entry.search_id for entry in batch], slot)
            except Exception:
                log.exception("search batch crashed")
            finally:
                slot.give_back()
                self.batches_run += 1
                with self._cond:
                    callbacks = [call for entry in batch for call in self._waiters.pop(entry.search_id, [])]
                for call in [*callbacks, *self._after_batch]:
                    call()


class _Slot:
    """One worker's turn at the matcher for one batch (:class:`MatchingTurn`): the process's
    matching slot, then the node's turn when the node has one."""

    def __init__(self, slots: threading.Semaphore, node_turn: NodeTurn | None) -> None:
        self._slots, self._node_turn = slots, node_turn
        self._holds_slot = self._holds_node_turn = False

    @property
    def holds_turn(self) -> bool:
        return self._holds_slot and (self._node_turn is None or self._holds_node_turn)

    def take_back(self) -> None:
        if not self._holds_slot:
            self._slots.acquire()
            self._holds_slot = True
        if self._node_turn is not None and not self._holds_node_turn:
            self._node_turn.take()
            self._holds_node_turn = True

    def give_back(self) -> None:
        if self._holds_node_turn:
            assert self._node_turn is not None
            self._node_turn.give_back()
            self._holds_node_turn = False
        if self._holds_slot:
            self._slots.release()
            self._holds_slot = False
