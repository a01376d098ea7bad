"""The read-ahead that overlaps reading a bulk load's source with writing it."""

import threading

import pytest

from app.core.prefetch import prefetched


def test_items_come_in_order_and_all_of_them():
    assert list(prefetched(iter(range(1000)), depth=3)) == list(range(1000))


def test_the_source_is_read_ahead_on_another_thread():
    readers: set[str] = set()

    def source():
        for number in range(5):
            readers.add(threading.current_thread().name)
            yield number

    assert list(prefetched(source())) == [0, 1, 2, 3, 4]
    assert readers == {"prefetch"}


def test_an_error_of_the_source_is_raised_where_it_happened():
    def source():
        yield 1
        yield 2
        raise ValueError("row 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="row 3 is broken"):
        for item in prefetched(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_the_reader():
    produced = []

    def source():
        for number in range(1_000_000):
            produced.append(number)
            yield number

    items = prefetched(source(), depth=2)
    assert next(items) == 0
    items.close()
    count = len(produced)
    assert count <= 5, "the reader stays at most a few items ahead"
    assert len(produced) == count, "and reads nothing more once the consumer is gone"
