"""What the loop waits for besides finished attempts: attempt deadlines, retries waiting
out their backoff, the run's deadline and the next rate-limit token.

All of them are read against the injected :class:`~flowforge.clock.Clock`, so a test's
fake clock drives hours of backoff in microseconds. Two heaps hold the many (a deadline
per timed attempt, a due time per delayed retry); the run's deadline and the next token
are single values.
"""

from __future__ import annotations

import heapq
from typing import Any

from ..clock import Clock

__all__ = ["Timers"]


class Timers:
    """Deadlines and due times of one run, on one clock."""

    __slots__ = ("clock", "run_deadline", "token_due", "_deadlines", "delayed", "_seq")

    def __init__(self, clock: Clock, run_timeout: float | None) -> None:
        self.clock = clock
        self.run_deadline = None if run_timeout is None else clock.monotonic() + run_timeout
        self.token_due: float | None = None  # when a rate-limited task may have its token
        self._deadlines: list[tuple[float, int, Any]] = []
        self.delayed: list[tuple[float, int, Any]] = []  # a heap of retries waiting
        self._seq = 0  # ties in time keep their order; keys never get compared

    def deadline(self, key: Any, seconds: float) -> None:
        """``key`` (an attempt's future) times out ``seconds`` from now."""
        self._seq += 1
        heapq.heappush(self._deadlines, (self.clock.monotonic() + seconds, self._seq, key))

    def delay(self, entry: Any, seconds: float) -> None:
        """``entry`` (a ready-queue entry) is due again ``seconds`` from now."""
        self._seq += 1
        heapq.heappush(self.delayed, (self.clock.monotonic() + seconds, self._seq, entry))

    def token_in(self, seconds: float | None) -> None:
        """A rate-limited task may have its token ``seconds`` from now (None: none waits)."""
        self.token_due = None if seconds is None else self.clock.monotonic() + seconds

    def drop_delayed(self) -> None:
        """Forget the retries still waiting: the run stops."""
        self.delayed.clear()
        self.token_due = None

    def has_due(self) -> bool:
        """Something will be due later that could start work: a retry or a token."""
        return bool(self.delayed) or self.token_due is not None

    def next_due(self, starting: bool) -> float | None:
        """The earliest time anything is due (retries and tokens only while ``starting``)."""
        due = self.run_deadline
        if self._deadlines:
            t = self._deadlines[0][0]
            due = t if due is None or t < due else due
        if starting:
            if self.delayed:
                t = self.delayed[0][0]
                due = t if due is None or t < due else due
            if self.token_due is not None and (due is None or self.token_due < due):
                due = self.token_due
        return due

    def expired(self, now: float) -> list[Any]:
        """The keys whose deadline has passed, earliest first."""
        return _pop_until(self._deadlines, now)

    def due(self, now: float) -> list[Any]:
        """The delayed entries whose time has come, in order."""
        return _pop_until(self.delayed, now)

    def run_expired(self, now: float) -> bool:
        return self.run_deadline is not None and now >= self.run_deadline


def _pop_until(heap: list[tuple[float, int, Any]], now: float) -> list[Any]:
    """Pop what is due at ``now`` from a heap of ``(time, seq, item)``, earliest first."""
    out = []
    while heap and heap[0][0] <= now:
        out.append(heapq.heappop(heap)[2])
    return out
