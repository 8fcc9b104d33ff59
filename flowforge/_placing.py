"""The engine's side of executors that take task attempts themselves: how many attempts
a batching executor may hold (``room``), dropping those it still queues when the run
stops, and where process and cluster workers put large results (``plan_spills``).

A mixin of :class:`~flowforge._engine.Engine`; see "Process workers and clusters" in the
engine's design essay.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._private.handoff import Spill, plan_spills

if TYPE_CHECKING:
    from ._binding import Binding
    from .executors.base import Executor
    from .persistence.session import RunSession

__all__ = ["Placing"]


class Placing:
    """Batching executors and large results (mixed into :class:`Engine`)."""

    run_id: str
    _executor: Executor
    _task_executors: Any
    _inflight: dict[Executor, int]
    _running: dict[Future[Any], Any]
    _bindings: dict[str, Binding] | Any
    _session: RunSession | None
    _spills: dict[Executor, Spill]
    _handles: bool
    _send_ahead: bool

    if TYPE_CHECKING:
        def _mark_cancelled(self, name: str, reason: str) -> None: ...

    def _room(self, ex: Executor, name: str) -> bool:
        """Whether ``ex`` takes one more attempt of ``name`` now: a free worker, or on a
        batching executor a small task's place in its queue (never a timed task's: its
        timeout must start when it really starts)."""
        inflight = self._inflight.get(ex, 0)
        if inflight < ex.max_workers:
            return True
        return (
            ex.batching
            and self._bindings[name].task.timeout is None
            and inflight < ex.room(name, ahead=self._send_ahead)  # type: ignore[attr-defined]
        )

    def _plan_spills(self) -> None:
        """Let process workers hand large results over by file (see _private/handoff)."""
        isolated = {ex for ex in (self._executor, *self._task_executors.values()) if ex.isolated}
        if isolated:
            self._spills = plan_spills(isolated, self._session, self.run_id)
            self._handles = bool(self._spills) or any(
                ex.holds_results for ex in isolated
            )

    def _drop_queued(self, reason: str) -> None:
        """Attempts a batching executor holds but has not sent to a worker never start:
        after a fail_fast failure only what runs may finish."""
        for ex in {a.executor for a in self._running.values() if a.executor.batching}:
            for future in ex.cancel_queued():
                attempt = self._running.pop(future, None)
                if attempt is None:
                    continue
                self._inflight[ex] -= 1
                if attempt.index < 0:
                    self._mark_cancelled(attempt.name, f"it had not started when {reason}")
