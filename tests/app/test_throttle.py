"""The moving windows behind the rate limits, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from app.core import throttle
from app.core.errors import RateLimited
from app.core.throttle import WINDOW_S, MovingWindows, Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_limit_in_any_minute_and_is_told_when_the_oldest_hit_lapses():
    clock = Clock()
    windows = MovingWindows(3, clock)
    for _ in range(3):
        assert windows.hit("a") is None
        clock.now += 10
    assert windows.hit("a") == pytest.approx(WINDOW_S - 30)
    assert windows.wait_s("a") == pytest.approx(WINDOW_S - 30)
    assert windows.hit("b") is None  # keys count apart
    clock.now += WINDOW_S - 30  # the first hit leaves the window
    assert windows.wait_s("a") is None
    assert windows.hit("a") is None
    assert windows.hit("a") == pytest.approx(10)  # the second hit, 10 s later than the first, lapses next


def test_a_refused_hit_is_not_counted():
    clock = Clock()
    windows = MovingWindows(1, clock)
    assert windows.hit("a") is None
    for _ in range(5):
        clock.now += 1
        assert windows.hit("a") is not None
    clock.now += WINDOW_S - 5
    assert windows.hit("a") is None  # refused hits would have kept it refused


def test_keys_gone_quiet_are_swept(monkeypatch):
    monkeypatch.setattr(throttle, "SWEEP_EVERY", 10)
    clock = Clock()
    windows = MovingWindows(100, clock)
    for number in range(5):
        windows.hit(f"quiet-{number}")
    clock.now += WINDOW_S + 1
    for _ in range(10):
        windows.hit("busy")
    assert set(windows._hits) == {"busy"}


def test_windows_count_every_hit_of_concurrent_threads():
    windows = MovingWindows(1000)
    refused = []

    def client() -> None:
        refused.extend(wait for _ in range(300) if (wait := windows.hit("a")) is not None)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == 200


def test_the_throttle_answers_retry_after_in_whole_seconds_at_least_one():
    limits = Throttle(requests_per_minute=1, failed_auth_per_minute=1)
    limits.hit_principal(7)
    with pytest.raises(RateLimited) as refused:
        limits.hit_principal(7)
    assert 59 <= refused.value.retry_after_s <= 60
    limits.failed("10.0.0.1")
    with pytest.raises(RateLimited) as blocked:
        limits.check_address("10.0.0.1")
    assert blocked.value.code == "too_many_failed_authentications"
    limits.check_address("10.0.0.2")


def test_asking_about_a_key_makes_no_window_for_it():
    """Every request's address is asked about before its key is checked; only failures count."""
    windows = MovingWindows(3)
    for number in range(100):
        assert windows.wait_s(f"10.0.0.{number}") is None
    assert windows._hits == {}
