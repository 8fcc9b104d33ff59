"""The one clock that retry delays, timeouts and run deadlines read.

The engine never calls ``time`` directly: it asks a :class:`Clock`, so tests can swap in
:class:`flowforge.testing.FakeClock` and drive hours of backoff in microseconds.
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
