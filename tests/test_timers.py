"""Timers: deadlines, retry delays, the run deadline and tokens, read on the injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowforge._engine.timers import Timers
from flowforge.testing import FakeClock


def test_next_due_is_the_earliest_of_everything_and_retries_only_while_starting():
    """While the run stops, only deadlines (not retries or tokens) are waited for."""
    clock = FakeClock(100.0)
    timers = Timers(clock, run_timeout=50.0)
    timers.delay("retry", 5.0)
    timers.deadline("attempt", 20.0)
    timers.token_in(2.0)
    assert timers.next_due(starting=True) == 102.0
    assert timers.next_due(starting=False) == 120.0
    timers.drop_delayed()
    assert not timers.has_due()
    assert timers.next_due(starting=True) == 120.0


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=30),
       st.floats(min_value=0, max_value=1e6))
def test_due_and_expired_come_out_in_time_order_and_only_when_due(delays, now):
    """Entries come out sorted by due time, ties in the order they went in."""
    clock = FakeClock()
    timers = Timers(clock, run_timeout=None)
    for i, d in enumerate(delays):
        timers.delay(i, d)
        timers.deadline(-i - 1, d)
    due = timers.due(now)
    expected = [i for i, d in sorted(enumerate(delays), key=lambda p: (p[1], p[0])) if d <= now]
    assert due == expected
    assert timers.expired(now) == [-i - 1 for i in expected]
    assert timers.due(now) == []


def test_the_run_deadline_passes_on_the_clock_not_in_real_time():
    """run_expired reads the clock it was given."""
    clock = FakeClock()
    timers = Timers(clock, run_timeout=3600.0)
    assert not timers.run_expired(clock.monotonic())
    clock.advance(3600.0)
    assert timers.run_expired(clock.monotonic())
