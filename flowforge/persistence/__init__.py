"""Saved state: the persistence manager, the store interface and what they hold.

See :mod:`.manager` for how a run is recorded and resumed, :mod:`._frames` for the
on-disk grammar, :mod:`.files` and :mod:`.sqlite` for the two stores. The names load
lazily: ``import flowforge`` does not pay for them until a run saves state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._private.lazy import lazy_names

if TYPE_CHECKING:
    from .manager import PersistenceManager, SavedRun
    from .plan import Plan, PlanEntry
    from .records import RunInfo, TaskRecord
    from .store import StateStore

__all__ = [
    "DURABILITY",
    "PersistenceManager",
    "Plan",
    "PlanEntry",
    "RunInfo",
    "SavedRun",
    "StateStore",
    "TaskRecord",
]

#: ``process``: a saved record survives the process dying (one ``write()`` per task).
#: ``fsync``: it survives power loss too (an ``fdatasync`` per task).
DURABILITY = ("process", "fsync")

_WHERE = {
    "PersistenceManager": "manager",
    "SavedRun": "manager",
    "Plan": "plan",
    "PlanEntry": "plan",
    "RunInfo": "records",
    "TaskRecord": "records",
    "StateStore": "store",
}


__getattr__ = lazy_names(__name__, _WHERE, globals())
