"""The dashboard's ASGI app: :func:`create_app` wires the pages, the API, the live channel
and the token gate together; :func:`serve` runs it on uvicorn (``flowforge ui``).

Pages are one HTML shell (``static/index.html``) whose script (``static/app.js``) draws
the runs list, a run (its DAG as inline SVG, its tasks, its log) and the workflows from
the JSON API, and follows a running run through its event stream. Everything the browser
loads is served from the package: no CDN, no outside script.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import FlowForgeError
from .api import router
from .auth import TokenGate, check_bind
from .guard import DEFAULT_MAX_BODY, RequestGuard, check_max_body
from .launch import Launcher
from .live import LiveHub
from .metrics import DashboardMetrics
from .reader import StateReader

if TYPE_CHECKING:
    from .._workflow import Workflow

__all__ = ["Dashboard", "create_app", "serve"]

DEFAULT_LOG_FILE = os.path.join("logs", "workflow.log")


@dataclass
class Dashboard:
    """What the request handlers share: the state reader, the live hub, the metrics and
    the launcher; ``poll_s`` is how often an event stream re-reads the state folder."""

    reader: StateReader
    hub: LiveHub
    metrics: DashboardMetrics
    launcher: Launcher
    token: str | None
    poll_s: float = 1.0
    closing: bool = False  # set on Ctrl-C: open event streams end, so the server can stop


def create_app(
    state_dir: str | os.PathLike[str] = "state",
    targets: Sequence[str] = (),
    *,
    token: str | None = None,
    log_file: str | os.PathLike[str] | None = DEFAULT_LOG_FILE,
    poll_s: float = 1.0,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    max_body: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The dashboard for ``state_dir``. ``targets`` are files or modules defining
    workflows the dashboard may start (and whose DAGs draw their runs' edges); ``token``,
    if set, is required on every request; ``log_file`` is where runs write their JSON log
    lines (for tracebacks and the run's log).

    ``host`` is the address the server is bound to; requests must name it, a loopback
    name or one of ``allowed_hosts`` in their Host header, and bodies may be at most
    ``max_body`` bytes (see :mod:`.guard` for these and the cross-site rules)."""
    check_max_body(max_body)
    workflows = _load_targets(targets)
    reader = StateReader(os.fspath(state_dir), {n: wf for n, (_, wf) in workflows.items()},
                         None if log_file is None else os.fspath(log_file))
    metrics = DashboardMetrics(reader)
    hub = LiveHub(reader.state_dir, on_message=metrics.observe)
    dash = Dashboard(reader, hub, metrics, Launcher(reader, workflows), token, poll_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            hub.stop()

    app = FastAPI(
        title="FlowForge",
        version=__version__,
        description="Runs, tasks, live events and metrics of a FlowForge state folder.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the interactive docs load their scripts from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.include_router(router, prefix="/api/v1")

    @app.get("/health", include_in_schema=False)
    @app.get("/ping", include_in_schema=False)
    def liveness() -> dict[str, str]:
        """For load balancers and Kubernetes probes: the server answers. It says nothing
        else, so it needs no token and takes any Host (see web/auth.py PROBES)."""
        return {"status": "ok"}

    @app.exception_handler(FlowForgeError)
    async def state_problem(request: Request, exc: FlowForgeError) -> JSONResponse:
        # e.g. a corrupt or foreign state file: say which and what to do, not just "500"
        return JSONResponse({"detail": str(exc)}, status_code=500)
    static = str(resources.files("flowforge.web").joinpath("static"))
    app.mount("/static", StaticFiles(directory=static), name="static")
    shell = (resources.files("flowforge.web") / "static" / "index.html").read_text("utf-8")

    def page(request: Request) -> HTMLResponse:
        # no token in the script and style URLs: the cookie set from ?token= carries it
        text = shell.replace("{{version}}", html.escape(__version__))
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> RedirectResponse:
        query = request.url.query
        return RedirectResponse("/runs" + (f"?{query}" if query else ""), status_code=307)

    for path in ("/runs", "/runs/{run_id}", "/workflows"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse)
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    # added last, so outermost: the body limit is checked before any other rule
    app.add_middleware(RequestGuard, bound_host=host, allowed_hosts=tuple(allowed_hosts),
                       max_body=max_body)
    return app


def serve(
    state_dir: str, targets: Sequence[str] = (), *, host: str = "127.0.0.1", port: int = 8765,
    token: str | None = None, log_file: str | None = DEFAULT_LOG_FILE,
    allowed_hosts: Sequence[str] = (), max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Check the binding rule (:func:`~.auth.check_bind`) and serve until Ctrl-C;
    ``allowed_hosts`` and ``max_body`` as for :func:`create_app`."""
    import uvicorn

    check_bind(host, token)
    app = create_app(state_dir, targets, token=token, log_file=log_file, host=host,
                     allowed_hosts=allowed_hosts, max_body=max_body)
    dash: Dashboard = app.state.dashboard

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            dash.closing = True  # event streams see it within a second and end
            super().handle_exit(sig, frame)

    shown = f"[{host}]" if ":" in host else host
    print(f"flowforge ui: http://{shown}:{port}/runs (state folder {os.path.abspath(state_dir)})")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=5)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        Server(config).run()


def _load_targets(targets: Sequence[str]) -> dict[str, tuple[str, Workflow]]:
    """Every workflow the targets define, by name, with the target that defines it."""
    from ..errors import WorkflowDefinitionError
    from ..loading import load

    found: dict[str, tuple[str, Any]] = {}
    for target in targets:
        spec = os.path.abspath(target) if os.path.exists(target) else target
        for name, wf in load(target).items():
            if name in found and found[name][0] != spec:
                msg = (f"workflow {name!r} is defined by both {found[name][0]} and {spec}; "
                       "give flowforge ui only one of them")
                raise WorkflowDefinitionError(msg, workflow=name)
            found[name] = (spec, wf)
    return found
