"""The shapes the HTTP API sends and takes, as pydantic models: what the OpenAPI
document publishes and what FastAPI checks requests against."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "CancelAnswer", "Error", "Graph", "GraphNode", "Health", "Logs", "RunDetail", "RunPage",
    "RunStatusName", "RunSummary", "Schedule", "StartAnswer", "StartRequest", "TaskView",
    "WorkflowView",
]


class RunStatusName(str, Enum):
    """A saved run's status; ``interrupted``: its process died while it ran;
    ``unreadable``: its saved summary cannot be read (the run's ``reason`` says why)."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"
    unreadable = "unreadable"


class Error(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it")


class RunSummary(BaseModel):
    workflow: str
    run_id: str
    status: str
    started: float = Field(description="time.time() seconds")
    finished: float | None = None
    duration: float | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    interrupted: int = 0  # tasks running when its process died
    restored: int = 0
    resumes: int = 0
    job: str | None = None
    target: str | None = None
    params: dict[str, Any] | None = None
    reason: str | None = Field(None, description="Why an unreadable run cannot be read")


class RunPage(BaseModel):
    runs: list[RunSummary]
    total: int = Field(description="Runs matching the filters, all pages together")
    limit: int
    offset: int
    workflows: list[str] = Field(description="Every workflow with saved runs (for filters)")


class Failure(BaseModel):
    attempt: int | None = None
    error: str | None = None
    traceback: str | None = None
    will_retry: bool | None = None
    timestamp: str | None = None


class TaskView(BaseModel):
    name: str
    state: str = Field(description="pending, waiting, running, retrying, succeeded, failed, "
                       "skipped or cancelled")
    attempts: int
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    error: str | None = None
    traceback: str | None = Field(None, description="The last failed attempt's traceback, "
                                  "from the log file")
    reason: str | None = None
    live: bool = Field(False, description="The state comes from a live event")
    failures: list[Failure] = []


class GraphNode(BaseModel):
    name: str
    layer: int
    row: int


class Graph(BaseModel):
    nodes: list[GraphNode]
    edges: list[list[str]] = Field(description="[upstream, downstream] pairs")
    complete: bool = Field(description="False when the edges are unknown or not drawn")
    note: str | None = None


class RunDetail(BaseModel):
    run: RunSummary
    tasks: list[TaskView]
    graph: Graph | None = None


class Logs(BaseModel):
    run_id: str
    file: str | None
    lines: list[dict[str, Any]]


class Schedule(BaseModel):
    job: str
    workflow: str
    schedule: str | None = None
    timezone: str | None = None
    enabled: bool = True
    next_run: str | None = None
    last_status: str | None = None


class DurationPoint(BaseModel):
    run_id: str
    status: str
    duration: float


class WorkflowView(BaseModel):
    name: str
    runs: int
    success_rate: float | None = Field(description="Succeeded / finished runs, 0..1")
    durations: list[DurationPoint] = Field(description="Recent finished runs, oldest first")
    last_runs: list[RunSummary]
    schedules: list[Schedule]
    startable: bool = Field(description="The server was given this workflow's file")
    params: dict[str, Any] = {}


class Health(BaseModel):
    status: str
    version: str
    state_dir: str
    live: bool = Field(description="Live events from runs reach this server")
    live_problem: str | None = None


class StartRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="The run's params")
    fresh: bool = Field(False, description="Start afresh instead of resuming a run that "
                        "did not succeed")


class StartAnswer(BaseModel):
    workflow: str
    pid: int = Field(description="The process running the run")
    run_id: str | None = Field(description="None if the run did not show up within a few "
                               "seconds; find it in GET /runs")
    exit_code: int | None = Field(None, description="Set when the process already ended")


class CancelAnswer(BaseModel):
    run_id: str
    pid: int | None = None  # the process running it
    status: str = "cancelling"
