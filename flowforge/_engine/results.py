"""Task results of one run, wherever they are held.

A result is usually a plain value in :attr:`ResultStore.values`. Two things make it
otherwise, and this module keeps both out of the loop:

* with autosave on, a result the run let go of (every task that needed it has it) or
  one restored from an earlier run is not in memory: :class:`HeldResults` loads it back
  from the run's saved state the first time it is asked for;
* a large result from a process worker or a cluster is held as a *handle* (a file
  mapped on demand, or a Dask future; see :mod:`flowforge._resultfiles`). Isolated
  workers receive the handle as it is; :meth:`ResultStore.local_inputs` and
  :meth:`ResultStore.value` map or fetch it only where the driver needs the value (a
  thread task's input, a condition, a branch, a map's list) and, through
  :meth:`ResultStore.hold`, at the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._resultfiles import (
    FilePolicy,
    hold_all,
    materialize,
    materialize_inputs,
    plan_files,
    remove_files,
)
from ..executors.base import SharesResults

if TYPE_CHECKING:
    from ..executors.base import Executor
    from ..persistence.session import RunSession

__all__ = ["HeldResults", "ResultStore"]


class HeldResults(dict[str, Any]):
    """Results in memory; a missing one is loaded from the run's saved state."""

    __slots__ = ("_load",)

    def __init__(self, load: Callable[[str], Any]) -> None:
        super().__init__()
        self._load = load

    def __missing__(self, name: str) -> Any:
        value = self[name] = self._load(name)
        return value


class ResultStore:
    """Every result of one run by task name, and where large ones are written."""

    __slots__ = ("values", "handles", "file_policies")

    def __init__(self, load: Callable[[str], Any] | None) -> None:
        self.values: dict[str, Any] = {} if load is None else HeldResults(load)
        #: True when some result may be a handle: local inputs must then be mapped.
        self.handles = False
        self.file_policies: dict[Executor, FilePolicy] = {}  # isolated executor -> where it writes

    def plan(self, isolated: Iterable[Executor], session: RunSession | None,
             run_id: str) -> None:
        """Let these isolated executors hand large results over by file (or keep them on
        their cluster); before the first attempt starts."""
        isolated = list(isolated)
        if isolated:
            self.file_policies = plan_files(isolated, session, run_id)
            self.handles = bool(self.file_policies) or any(
                isinstance(ex, SharesResults) and ex.on_cluster for ex in isolated
            )

    def local_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` for an attempt that runs in the driver: every handle mapped."""
        return materialize_inputs(kwargs) if self.handles else kwargs

    @staticmethod
    def value(raw: Any) -> Any:
        """The value behind a result as the loop holds it (a handle mapped or fetched)."""
        return materialize(raw)

    def hold(self) -> None:
        """At the end of the run, before its executors stop: bring every held result into
        memory (mapped values stay valid once the files are gone)."""
        if self.handles:
            hold_all(self.values)

    def remove_files(self) -> None:
        """After the executors stopped: delete the run's temporary result files."""
        if self.file_policies:
            remove_files(self.file_policies)
