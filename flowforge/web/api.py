"""The JSON API under ``/api/v1``: runs, one run and its live events, starting and
cancelling runs, workflows, health and Prometheus metrics.

Every handler is a thin face over :mod:`.reader` (what the state folder says), :mod:`.live`
and :mod:`.stream` (what runs say as they go) and :mod:`.launch` (starting and stopping).
Errors answer ``{"detail": "..."}`` naming the thing and what to do.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from .. import __version__
from .launch import LaunchError
from .metrics import CONTENT_TYPE
from .models import (
    CancelAnswer,
    Error,
    Health,
    Logs,
    RunDetail,
    RunPage,
    RunStatusName,
    StartAnswer,
    StartRequest,
    WorkflowView,
)
from .stream import event_stream

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = ["router"]

router = APIRouter()

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No such run"}}
RunId = Annotated[str, "a run id"]


def _dash(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def _no_run(dash: Dashboard, run_id: str) -> HTTPException:
    return HTTPException(404, f"no run {run_id!r} in state folder {dash.reader.state_dir!r}; "
                              "list the runs with GET /api/v1/runs")


@router.get("/health", response_model=Health, summary="Is the server up, and live")
def health(request: Request) -> dict[str, Any]:
    dash = _dash(request)
    return {"status": "ok", "version": __version__, "state_dir": dash.reader.state_dir,
            "live": dash.hub.listening, "live_problem": dash.hub.problem}


@router.get("/runs", response_model=RunPage, summary="Saved runs, newest first")
def list_runs(
    request: Request,
    workflow: Annotated[str | None, Query(description="Only this workflow's runs")] = None,
    status: Annotated[RunStatusName | None, Query(description="Only runs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    reader = _dash(request).reader
    every = reader.summaries()  # a run that cannot be read is listed, status "unreadable"
    runs = [r for r in every if (workflow is None or r["workflow"] == workflow)
            and (status is None or r["status"] == status.value)]
    return {"runs": runs[offset:offset + limit], "total": len(runs),
            "limit": limit, "offset": offset,
            "workflows": sorted({r["workflow"] for r in every})}


@router.get("/runs/{run_id}", response_model=RunDetail, responses=_NOT_FOUND,
            summary="One run: its tasks, their errors and tracebacks, and its DAG")
def get_run(request: Request, run_id: RunId) -> dict[str, Any]:
    dash = _dash(request)
    view = dash.reader.run_view(run_id, dash.hub.tasks(run_id))
    if view is None:
        raise _no_run(dash, run_id)
    return view


@router.get("/runs/{run_id}/logs", response_model=Logs, responses=_NOT_FOUND,
            summary="The run's log lines (events and ctx.log), oldest first")
def get_logs(
    request: Request, run_id: RunId, limit: Annotated[int, Query(ge=1, le=2000)] = 500
) -> dict[str, Any]:
    dash = _dash(request)
    if dash.reader.find(run_id) is None:
        raise _no_run(dash, run_id)
    return {"run_id": run_id, "file": dash.reader.log_file,
            "lines": dash.reader.log_lines(run_id, limit)}


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"description": "Server-Sent Events: snapshot, task, workflow, then a final "
                             "run event",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **_NOT_FOUND,
    },
    summary="The run's live events (SSE), until it ends",
)
async def run_events(request: Request, run_id: RunId) -> StreamingResponse:
    dash = _dash(request)
    found = await asyncio.to_thread(dash.reader.find, run_id)
    if found is None:
        raise _no_run(dash, run_id)
    return StreamingResponse(
        event_stream(run_id, dash.reader, dash.hub, poll_s=dash.poll_s,
                     closing=lambda: dash.closing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=CancelAnswer,
             responses={**_NOT_FOUND, 409: {"model": Error, "description": "Not running"}},
             summary="Stop a running run (as flowforge cancel does)")
def cancel_run(request: Request, run_id: RunId) -> dict[str, Any]:
    dash = _dash(request)
    try:
        pid = dash.launcher.cancel(run_id)
    except LaunchError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return {"run_id": run_id, "pid": pid, "status": "cancelling"}


@router.get("/workflows", response_model=list[WorkflowView],
            summary="Workflows: success rate, recent durations, last runs, schedules")
def list_workflows(request: Request) -> list[dict[str, Any]]:
    return _dash(request).reader.workflow_views()


@router.post(
    "/workflows/{name}/runs", status_code=202, response_model=StartAnswer,
    responses={404: {"model": Error, "description": "The server was not given this workflow"},
               409: {"model": Error, "description": "The workflow is running already"},
               422: {"description": "Params the workflow refuses"}},
    summary="Start a run of a workflow given to flowforge ui, in a process of its own",
)
async def start_run(
    request: Request, name: str, body: StartRequest | None = None
) -> dict[str, Any]:
    dash = _dash(request)
    body = body or StartRequest(params={}, fresh=False)
    try:
        pid = await asyncio.to_thread(dash.launcher.start, name, body.params, fresh=body.fresh)
    except LaunchError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    run_id = await dash.launcher.run_id_of(name, pid)
    return {"workflow": name, "pid": pid, "run_id": run_id,
            "exit_code": dash.launcher.exit_code(pid)}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    return Response(_dash(request).metrics.render(), media_type=CONTENT_TYPE)
