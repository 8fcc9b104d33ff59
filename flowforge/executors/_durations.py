"""How long attempts take: the process executor's only measuring.

A running average of attempt durations per task, and per code object as the first guess
for a new task of the same function (many tasks of one function, as generated graphs
have), decides which attempts are small enough to batch and which may have another wait
behind them in a worker's pipe (see :mod:`flowforge.executors.process`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Durations"]

_EWMA = 0.2  # weight of the newest duration in a task's running average


class Durations:
    """Average attempt durations (seconds) by task name, guessed from the task's code
    until the task has run."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._by_code: dict[Any, float] = {}

    def of(self, name: str) -> float | None:
        """Task ``name``'s average attempt duration; None while unknown."""
        return self._seconds.get(name)

    def expect(self, name: str, task: Any) -> None:
        """A new task's attempts are as long as its code's so far, if that is known."""
        if name not in self._seconds:
            guess = self._by_code.get(_code_of(task))
            if guess is not None:
                self._seconds[name] = guess

    def record(self, name: str, task: Any, ran_for: Sequence[float]) -> None:
        """Attempts of ``name`` (running ``task``) took ``ran_for`` seconds each."""
        seconds, by_code = self._seconds, self._by_code
        code = _code_of(task)
        for each in ran_for:
            seconds[name] = _average(seconds.get(name), each)
            by_code[code] = _average(by_code.get(code), each)


def _average(old: float | None, new: float) -> float:
    """A running average of attempt durations that follows recent ones."""
    return new if old is None else old + _EWMA * (new - old)


def _code_of(task: Any) -> Any:
    """What ``task`` runs, as a key for how long its attempts take: the code of its
    function or ``run`` method (closures and lambdas made in a loop share theirs)."""
    fn = getattr(task, "callable", task)
    return getattr(fn, "__code__", fn)
