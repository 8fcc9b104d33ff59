"""The one clock that the engine's waits read.

Every *decision* that depends on time goes through a :class:`Clock`: retry delays,
attempt timeouts, the run's timeout and rate-limit tokens (see
``flowforge/_engine/timers.py`` and ``admission.py``). Tests swap in
:class:`flowforge.testing.FakeClock` and drive hours of backoff in microseconds.

What is only *reported* is real time, read from ``time`` directly: a task's duration
(``time.perf_counter()``) and the wall-clock stamps of records and events
(``time.time()``). A fake clock changes when things happen, never how long they took.
The cron scheduler has a clock of its own (:mod:`flowforge.scheduler`).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` of this clock's time."""

    def blocking_timeout(self, seconds: float | None) -> float | None:
        """Real seconds to block while waiting ``seconds`` of clock time for a task to
        finish (None: no deadline). A fake clock returns a short poll instead, so a test
        that moves it forward is noticed."""


class SystemClock:
    """Real time: ``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def blocking_timeout(self, seconds: float | None) -> float | None:
        return seconds

    def __repr__(self) -> str:
        return "SystemClock()"
