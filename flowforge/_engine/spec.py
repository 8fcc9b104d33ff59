"""What one run is made of, as the engine receives it from run assembly
(:mod:`flowforge._run`): the bound tasks, their executors, the policies, and the
optional parts (a run session, fixtures, admission control)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._binding import Binding
    from .._fixtures import FixtureRef
    from ..bus import EventBus
    from ..clock import Clock
    from ..dag import CompiledDAG
    from ..executors.base import Executor
    from ..persistence.session import RunSession
    from .admission import Admission, Request

__all__ = ["RunSpec"]


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One run to make: ``session`` is None with autosave off, ``admission`` None when
    the run declares no limits or requests."""

    workflow: str
    run_id: str
    graph: CompiledDAG
    bindings: Mapping[str, Binding]
    params: Mapping[str, Any]
    executor: Executor
    task_executors: Mapping[str, Executor]
    on_error: str
    timeout: float | None
    clock: Clock
    bus: EventBus
    log_file: str | None = None
    log_console: bool = False
    session: RunSession | None = None
    fixtures: Mapping[str, FixtureRef] = field(default_factory=dict)
    admission: Admission | None = None
    requests: Mapping[str, Request] = field(default_factory=dict)
    scheduled_for: datetime | None = None  # a scheduler's fire time (TaskContext)
