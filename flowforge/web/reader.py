"""What the dashboard shows, read from the state folder, the log file and the job table.

Everything goes through the persistence API (:class:`PersistenceManager`); nothing here
writes. A run's task states come from its journal, and, while it runs, from the live
events the server received (:mod:`.live`), whichever is newer. Error tracebacks and a
run's log lines come from the JSON-lines log the runs write (``logs/workflow.log`` by
default), since the journal keeps only each task's last error text.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import StateError
from ..persistence.manager import PersistenceManager, SavedRun, folder_store
from ..persistence.records import RunInfo
from ..persistence.store import UnreadableRun
from .layout import MAX_DRAWN, grid, layered

if TYPE_CHECKING:
    from .._workflow import Workflow

__all__ = ["FINAL", "StateReader", "run_dict", "unreadable_dict"]

#: Run statuses that never change again.
FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
_RECENT = 30  # runs per workflow in its duration chart
_LOG_CAP = 2000  # log lines per request, at most


def unreadable_dict(bad: UnreadableRun) -> dict[str, Any]:
    """A run whose summary cannot be read, as the API lists it: status ``unreadable``,
    ``reason`` naming the file and the problem, ``started`` when the file was written."""
    return {
        "workflow": bad.workflow, "run_id": bad.run_id, "status": "unreadable",
        "reason": bad.reason, "started": bad.modified or 0.0, "finished": None,
        "duration": None, "total": 0, "succeeded": 0, "failed": 0, "skipped": 0,
        "cancelled": 0, "interrupted": 0, "restored": 0, "resumes": 0, "job": None, "target": None,
        "params": None,
    }


def quarantined_dict(note: Mapping[str, Any]) -> dict[str, Any]:
    """A run set aside as damaged (see PersistenceManager): status ``quarantined``,
    ``reason`` saying why and where it went."""
    bad = UnreadableRun(workflow=str(note.get("workflow", "")),
                        run_id=str(note.get("run_id", "")), where=str(note.get("where", "")),
                        reason=f"{note.get('why', '')} (set aside in {note.get('where')})",
                        modified=float(note.get("when") or 0.0))
    return {**unreadable_dict(bad), "status": "quarantined"}


def run_dict(info: RunInfo) -> dict[str, Any]:
    """A run's summary as the API sends it (a running or interrupted run's counts come
    from its journal: see PersistenceManager.runs); a running run has lasted until now."""
    end = info.finished
    if end is None and info.status == "running":
        end = time.time()
    duration = None if end is None else round(end - info.started, 6)
    return {
        "workflow": info.workflow, "run_id": info.run_id, "status": info.status,
        "started": info.started, "finished": info.finished, "duration": duration,
        "total": info.total, "succeeded": info.succeeded, "failed": info.failed,
        "skipped": info.skipped, "cancelled": info.cancelled,
        "interrupted": info.interrupted, "restored": info.restored,
        "resumes": info.resumes, "job": info.job, "target": info.target, "params": info.params,
    }


class StateReader:
    """Read-only views of ``state_dir`` for the pages and the API. ``workflows`` are the
    workflows the server was given (their DAGs draw runs' edges); ``log_file`` is where
    runs write their JSON log lines."""

    def __init__(
        self, state_dir: str, workflows: Mapping[str, Workflow], log_file: str | None
    ) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.workflows = dict(workflows)
        self.log_file = None if log_file is None else os.path.abspath(log_file)
        self._managers: dict[str, PersistenceManager] = {}

    def manager(self) -> PersistenceManager:
        """The manager for the folder's store (SQLite when its database is there)."""
        kind = folder_store(self.state_dir)
        found = self._managers.get(kind)
        if found is None:
            found = self._managers[kind] = PersistenceManager(self.state_dir, store=kind)
        return found

    # -- runs ------------------------------------------------------------------------

    def listing(
        self, workflow: str | None = None
    ) -> tuple[list[RunInfo], list[UnreadableRun]]:
        """Saved runs, newest first (of ``workflow`` only, if given), and the runs whose
        summary cannot be read: one damaged file never hides the others."""
        if not os.path.isdir(self.state_dir):
            return [], []
        unreadable: list[UnreadableRun] = []
        return self.manager().runs(workflow, unreadable=unreadable), unreadable

    def runs(self, workflow: str | None = None) -> list[RunInfo]:
        """Saved runs that can be read, newest first (of ``workflow`` only, if given)."""
        return self.listing(workflow)[0]

    def summaries(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """Every run as the API lists it, unreadable and quarantined ones included,
        newest first."""
        out = _summaries(*self.listing(workflow))
        for note in self.manager().store.quarantined():
            if workflow is None or note.get("workflow") == workflow:
                out.append(quarantined_dict(note))
        out.sort(key=lambda r: (r["started"], r["run_id"]), reverse=True)
        return out

    def find(self, run_id: str, workflow: str | None = None) -> RunInfo | None:
        return next((r for r in self.runs(workflow) if r.run_id == run_id), None)

    def run_view(
        self, run_id: str, live: Mapping[str, Mapping[str, Any]] | None = None,
        *, details: bool = True,
    ) -> dict[str, Any] | None:
        """The run page's data: summary, tasks (merged with ``live`` task states) and,
        with ``details``, the DAG and each failure's traceback. None if no such run."""
        if not os.path.isdir(self.state_dir):
            return None
        try:
            saved = self.manager().load(run_id)  # one listing of the runs, not two
        except KeyError:
            return None
        except StateError:
            bad = next((u for u in self.listing()[1] if u.run_id == run_id), None)
            if bad is None:
                raise  # its journal, not its summary: the app's handler names the file
            return {"run": unreadable_dict(bad), "tasks": [], "graph": None}
        info = saved.info
        order = self._order(info.workflow, saved)
        running = info.status == "running"
        failures = self.failures(run_id) if details else {}
        tasks = []
        for name in order:
            task = _task_view(name, saved, live.get(name) if running and live else None)
            attempts = failures.get(name, [])
            task["failures"] = attempts
            task["traceback"] = next(
                (a["traceback"] for a in reversed(attempts) if a.get("traceback")), None
            )
            tasks.append(task)
        view: dict[str, Any] = {"run": run_dict(info), "tasks": tasks}
        if details:
            view["graph"] = self.graph(info.workflow, order)
        return view

    def _order(self, workflow: str, saved: SavedRun) -> list[str]:
        """The run's tasks: in the DAG's order when the workflow is known, else in the
        order they finished, then the rest by name."""
        known = saved.known
        wf = self.workflows.get(workflow)
        order: list[str] = []
        if wf is not None:
            order = [n for n in wf.dag.topological_order() if n in known or not known]
        records = saved.tasks

        def by_start(name: str) -> tuple[bool, float, str]:
            rec = records.get(name)
            return (rec is None, 0.0 if rec is None else rec.started or 0.0, name)

        return order + sorted(known - set(order), key=by_start)

    def graph(self, workflow: str, order: list[str]) -> dict[str, Any]:
        """Columns, rows and edges of the run's tasks for the drawing."""
        if len(order) > MAX_DRAWN:
            return {"nodes": [], "edges": [], "complete": False,
                    "note": f"{len(order)} tasks: too many to draw (the table lists them)"}
        wf = self.workflows.get(workflow)
        if wf is None:
            places = grid(order)
            edges: list[list[str]] = []
            note: str | None = (
                f"edges unknown: start `flowforge ui` with the file that defines "
                f"{workflow!r} to draw them"
            )
        else:
            names = set(order)
            upstream = {n: [u for u in wf.dag.upstream(n) if u in names]
                        for n in order if n in wf.dag.tasks}
            places = layered(order, upstream)
            edges = [[u, n] for n, ups in upstream.items() for u in ups]
            note = None
        nodes = [{"name": n, "layer": c, "row": r} for n, (c, r) in places.items()]
        return {"nodes": nodes, "edges": edges, "complete": wf is not None, "note": note}

    # -- the log file ------------------------------------------------------------------

    def log_lines(self, run_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """The last ``limit`` log lines of ``run_id`` (events and ``ctx.log`` lines)."""
        if self.log_file is None:
            return []
        needle = json.dumps(run_id)
        kept: deque[dict[str, Any]] = deque(maxlen=max(1, min(limit, _LOG_CAP)))
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if needle not in line:
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and entry.get("run_id") == run_id:
                        kept.append(entry)
        except OSError:
            return []
        return list(kept)

    def failures(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Each task's failed attempts from the log: error, traceback, retry or not."""
        out: dict[str, list[dict[str, Any]]] = {}
        for entry in self.log_lines(run_id, _LOG_CAP):
            if entry.get("event") != "task_failed" or "index" in entry:
                continue
            out.setdefault(str(entry.get("task")), []).append({
                "attempt": entry.get("attempt"), "error": entry.get("error"),
                "traceback": entry.get("traceback"), "will_retry": entry.get("will_retry"),
                "timestamp": entry.get("timestamp"),
            })
        return out

    # -- workflows and schedules -------------------------------------------------------

    def workflow_views(self) -> list[dict[str, Any]]:
        """Per workflow: success rate, recent durations, last runs, schedules."""
        by_name: dict[str, list[RunInfo]] = {n: [] for n in self.workflows}
        readable, unreadable = self.listing()
        listed: dict[str, list[dict[str, Any]]] = {}
        for summary in _summaries(readable, unreadable):
            by_name.setdefault(summary["workflow"], [])
            listed.setdefault(summary["workflow"], []).append(summary)
        for info in readable:
            by_name[info.workflow].append(info)
        schedules = self.schedules()
        for row in schedules:
            by_name.setdefault(str(row["workflow"]), [])
        views = []
        for name in sorted(by_name):
            runs = by_name[name]
            done = [r for r in runs if r.status in FINAL]
            ok = sum(1 for r in done if r.status == "succeeded")
            recent = [r for r in done if r.finished is not None][:_RECENT]
            wf = self.workflows.get(name)
            views.append({
                "name": name,
                "runs": len(listed.get(name, ())),
                "success_rate": round(ok / len(done), 4) if done else None,
                "durations": [
                    {"run_id": r.run_id, "status": r.status,
                     "duration": round((r.finished or r.started) - r.started, 6)}
                    for r in reversed(recent)
                ],
                "last_runs": listed.get(name, [])[:5],
                "schedules": [s for s in schedules if s["workflow"] == name],
                "startable": wf is not None,
                "params": {} if wf is None else _jsonable(wf.params),
            })
        return views

    def schedules(self) -> list[dict[str, Any]]:
        """Jobs in the folder's job table, with their next fire time."""
        from ..scheduler.jobs import JobTable, next_run

        if not os.path.exists(os.path.join(self.state_dir, "scheduler", "jobs.json")):
            return []
        table = JobTable(self.state_dir)
        now = datetime.now(timezone.utc)
        rows = []
        for name in table.names():
            row = table.get(name)
            try:
                upcoming = next_run(row, now)
            except Exception:  # a job the scheduler itself would refuse: show it anyway
                upcoming = None
            rows.append({
                "job": name, "workflow": str(row.get("workflow") or name),
                "schedule": row.get("schedule"), "timezone": row.get("timezone"),
                "enabled": bool(row.get("enabled", True)),
                "next_run": None if upcoming is None else upcoming.isoformat(timespec="seconds"),
                "last_status": row.get("last_status"),
            })
        return rows


def _summaries(runs: list[RunInfo], unreadable: list[UnreadableRun]) -> list[dict[str, Any]]:
    out = [run_dict(r) for r in runs] + [unreadable_dict(u) for u in unreadable]
    out.sort(key=lambda r: (r["started"], r["run_id"]), reverse=True)
    return out


def _task_view(name: str, saved: SavedRun, live: Mapping[str, Any] | None) -> dict[str, Any]:
    rec = saved.tasks.get(name)
    view: dict[str, Any] = {
        "name": name, "state": "pending", "attempts": 0, "started": None, "finished": None,
        "duration": None, "error": None, "reason": None, "live": False,
    }
    if rec is not None:
        view.update(state=rec.state.value, attempts=rec.attempts, started=rec.started,
                    finished=rec.finished, duration=rec.duration, error=rec.error)
    if live is not None and float(live.get("ts") or 0) > float(view["finished"] or 0):
        view.update(state=live["state"], attempts=max(int(live.get("attempt") or 0),
                                                      view["attempts"]),
                    error=live.get("error") or view["error"], reason=live.get("reason"),
                    live=True)
        if live.get("duration") is not None:
            view["duration"] = live["duration"]
    return view


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=repr))
    except (TypeError, ValueError):
        return {}
