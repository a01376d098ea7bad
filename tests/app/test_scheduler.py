"""The scheduler never holds a search that could run now: a lone search starts at once, and the
searches that arrive while the matcher is busy leave together in the next batch, earliest
deadline first."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from app.matching.node_turn import NodeTurn
from app.matching.scheduler import MatchingTurn, Scheduler

GALLERIES = (1,)


@contextmanager
def running(*schedulers: Scheduler) -> Iterator[None]:
    """The schedulers started for the block, stopped after it whatever happens."""
    for scheduler in schedulers:
        scheduler.start()
    try:
        yield
    finally:
        for scheduler in schedulers:
            scheduler.stop()


def deadline(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


class CountingCondition(threading.Condition):
    """Counts the waits with a time-out: a worker that holds a search and waits a while for
    others to join it (a batching window) is the only one that waits that way."""

    def __init__(self) -> None:
        super().__init__()
        self.timed_waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.timed_waits += timeout is not None
        return super().wait(timeout)


def test_a_lone_search_runs_at_once_and_a_burst_during_it_is_coalesced():
    batches: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def run(search_ids: list[int], turn: MatchingTurn) -> None:
        batches.append(search_ids)
        if len(batches) == 1:
            first_started.set()
            assert release_first.wait(10)

    scheduler = Scheduler(run, workers=1, max_batch=64)
    scheduler._cond = condition = CountingCondition()
    scheduler.start()
    try:
        scheduler.submit(1, deadline(30), GALLERIES)
        # Nothing else is queued and nothing more is submitted until the lone search has started:
        # a scheduler waiting for company would wait here until the timeout.
        assert first_started.wait(10), "the lone search did not start on its own"
        for search_id, days in ((2, 20), (3, 10), (4, 40)):
            scheduler.submit(search_id, deadline(days), GALLERIES)
        release_first.set()
        assert all(scheduler.wait(search_id, 10) for search_id in (1, 2, 3, 4))
    finally:
        scheduler.stop()
    assert batches == [[1], [3, 2, 4]], "the burst leaves as one batch, earliest deadline first"
    assert condition.timed_waits == 0, "a worker held a search and waited for company"


def test_searches_of_other_galleries_are_not_held_by_a_batch():
    batches: list[list[int]] = []
    scheduler = Scheduler(lambda search_ids, turn: batches.append(search_ids), workers=1, max_batch=64)
    scheduler.pause()
    with running(scheduler):
        scheduler.submit(1, deadline(10), (1,))
        scheduler.submit(2, deadline(20), (2,))
        scheduler.submit(3, deadline(30), (1,))
        scheduler.resume()
        assert all(scheduler.wait(search_id, 10) for search_id in (1, 2, 3))
    assert batches == [[1, 3], [2]]


def test_one_batch_is_matched_at_a_time_and_the_next_takes_what_queued_meanwhile():
    """Two workers, one matching slot: while the first batch is matched, the other worker takes
    nothing (two batches matched at once only contend for the cores); once it is matched, the
    other worker takes all that queued meanwhile as one batch, while the first writes its results."""
    batches: list[list[int]] = []
    first_matching, first_may_finish, second_ran = threading.Event(), threading.Event(), threading.Event()
    second_taken = threading.Event()

    def run(search_ids: list[int], turn: MatchingTurn) -> None:
        batches.append(search_ids)
        if len(batches) == 2:
            second_taken.set()
        if len(batches) == 1:
            first_matching.set()
            assert first_may_finish.wait(10)
            turn.give_back()
            assert second_ran.wait(10), "the next batch waited for the first one's writes"
        else:
            turn.give_back()
            second_ran.set()

    scheduler = Scheduler(run, workers=2, max_batch=64)
    with running(scheduler):
        scheduler.submit(1, deadline(30), GALLERIES)
        assert first_matching.wait(10)
        scheduler.submit(2, deadline(2), GALLERIES)
        assert not second_taken.wait(0.5), "a second batch was taken while the first was matched"
        for search_id in (3, 4):
            scheduler.submit(search_id, deadline(search_id), GALLERIES)
        first_may_finish.set()
        assert all(scheduler.wait(search_id, 10) for search_id in (1, 2, 3, 4))
    assert batches == [[1], [2, 3, 4]]


def test_the_processes_of_a_node_match_in_turn_and_a_paused_one_holds_no_turn(tmp_path):
    """Two schedulers, as two processes of a node, on one turn file: while the first matches,
    the second takes nothing; once the first's batch is matched, the second takes all that
    queued meanwhile as one batch. A scheduler paused holds no turn from the other."""
    batches: dict[str, list[list[int]]] = {"a": [], "b": []}
    a_matching, a_may_finish = threading.Event(), threading.Event()
    b_taken = threading.Event()

    def run_a(search_ids: list[int], turn: MatchingTurn) -> None:
        batches["a"].append(search_ids)
        if len(batches["a"]) == 1:
            a_matching.set()
            assert a_may_finish.wait(10)

    def run_b(search_ids: list[int], turn: MatchingTurn) -> None:
        batches["b"].append(search_ids)
        b_taken.set()

    turn_file = tmp_path / "matching.lock"
    a = Scheduler(run_a, workers=2, max_batch=64, node_turn=NodeTurn(turn_file))
    b = Scheduler(run_b, workers=2, max_batch=64, node_turn=NodeTurn(turn_file))
    a.start()
    b.start()
    try:
        a.submit(1, deadline(30), GALLERIES)
        assert a_matching.wait(10)
        b.submit(2, deadline(2), GALLERIES)
        assert not b_taken.wait(0.5), "a batch was taken while another process of the node matched"
        b.submit(3, deadline(3), GALLERIES)
        a.pause()
        a_may_finish.set()
        assert all(b.wait(search_id, 10) for search_id in (2, 3))
        a.submit(4, deadline(4), GALLERIES)  # held by the paused scheduler, which never took the turn
        b.submit(5, deadline(5), GALLERIES)
        assert b.wait(5, 10), "a paused scheduler kept the node's turn"
        a.resume()
        assert a.wait(4, 10)
    finally:
        a.stop()
        b.stop()
    assert batches == {"a": [[1], [4]], "b": [[2, 3], [5]]}


class ObservedTurn(NodeTurn):
    """A node turn that says when a worker starts waiting for it."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.waited_for = threading.Event()

    def take(self) -> None:
        self.waited_for.set()
        super().take()


def test_a_scheduler_paused_while_it_waited_for_the_node_turn_gives_it_back(tmp_path):
    """A worker waiting for the node's turn with a search queued gets it after its scheduler
    was paused: it must give it back at once, not hold every other process of the node until
    the pause ends."""
    b_running, b_may_finish = threading.Event(), threading.Event()
    ran: list[int] = []

    def run_a(search_ids: list[int], turn: MatchingTurn) -> None:
        ran.extend(search_ids)

    def run_b(search_ids: list[int], turn: MatchingTurn) -> None:
        ran.extend(search_ids)
        if search_ids == [1]:
            b_running.set()
            assert b_may_finish.wait(10)

    turn_file = tmp_path / "matching.lock"
    a_turn = ObservedTurn(turn_file)
    a = Scheduler(run_a, workers=1, max_batch=64, node_turn=a_turn)
    b = Scheduler(run_b, workers=1, max_batch=64, node_turn=NodeTurn(turn_file))
    a.start()
    b.start()
    try:
        b.submit(1, deadline(1), GALLERIES)
        assert b_running.wait(10)  # b holds the node's turn
        a.submit(2, deadline(2), GALLERIES)
        assert a_turn.waited_for.wait(10)
        a.pause()  # while its worker waits for the turn
        b_may_finish.set()  # the turn passes to a's worker, which finds its scheduler paused
        b.submit(3, deadline(3), GALLERIES)
        assert b.wait(3, 10), "a paused scheduler kept the node's turn"
        assert 2 not in ran
        a.resume()
        assert a.wait(2, 10)
    finally:
        a.stop()
        b.stop()
    assert ran == [1, 3, 2]


def test_identifications_database_work_takes_turns_on_its_own_few_threads():
    """However many callers wait, at most ``threads`` of them run their database work at once:
    the matcher's thread is not left to contend for the interpreter lock with one thread per
    waiting client."""
    import anyio

    from app.matching.service import in_turn

    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    async def callers() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(in_turn, 2, work)
            await anyio.sleep(0.2)
            release.set()

    anyio.run(callers)
    assert most == 2


def test_a_batch_that_gave_its_turn_back_takes_it_again_while_another_worker_idles():
    """A batch gives its turn back while it waits (its gallery held by a snapshot being saved) and
    takes it again to match: the idle worker must not be holding it, waiting for searches that
    may never come."""
    took_back = threading.Event()

    def run(search_ids: list[int], turn: MatchingTurn) -> None:
        turn.give_back()
        threading.Event().wait(0.2)  # room for the idle worker to take the turn, were it to while idle
        turn.take_back()
        took_back.set()
        turn.give_back()

    scheduler = Scheduler(run, workers=2, max_batch=64)
    with running(scheduler):
        scheduler.submit(1, deadline(30), GALLERIES)
        assert took_back.wait(10), "the turn was never taken back"
