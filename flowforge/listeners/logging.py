"""Structured logs: one JSON object per line in ``workflow.log``, short lines on the console.

Built on structlog *without* touching its global configuration: each logger here is made
with ``structlog.wrap_logger`` around a private sink, so the user's own structlog and
``logging`` set-up stay as they were. The file is opened with ``O_APPEND`` and each line
is one ``write``, so lines from process workers (``ctx.log``) and from the driver
interleave whole.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

from ..bus import EventBus
from ..events import (
    Event,
    TaskCancelled,
    TaskFailed,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    TaskWaiting,
    WorkflowFinished,
    WorkflowStarted,
)

__all__ = ["LoggingListener", "error_text", "task_logger"]

_SHOWN = 8  # task names per reason on the console when a run resumes
_LOGGED = 200  # ... and in the log file

_FILES: dict[str, _AppendFile] = {}
_FILES_LOCK = threading.Lock()


class _AppendFile:
    """A log file shared by every logger of this process, written a line at a time."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pid = os.getpid()

    def write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode("utf-8", "replace"))


def _append_file(path: str) -> _AppendFile:
    key = os.path.abspath(path)
    with _FILES_LOCK:
        f = _FILES.get(key)
        if f is None or f._pid != os.getpid():
            f = _FILES[key] = _AppendFile(path)
        return f


class _Sink:
    """structlog's output end: receives the rendered JSON line and the event dict."""

    def __init__(self, path: str | None, console: Any) -> None:
        self._file = _append_file(path) if path else None
        self._console = console

    def _write(self, line: str, human: str | None = None) -> None:
        if self._file is not None:
            try:
                self._file.write(line)
            except OSError:
                pass
        if human is not None and self._console is not None:
            self._console.line(human)

    msg = debug = info = warning = warn = error = critical = exception = fatal = _write


def _add_timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    ts = event_dict.get("timestamp")
    if not isinstance(ts, str):
        ts = datetime.fromtimestamp(ts if ts is not None else time.time(), tz=timezone.utc)
        event_dict["timestamp"] = ts.isoformat(timespec="milliseconds")
    return event_dict


def _render(console: bool) -> Any:
    def render(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        human = event_dict.pop("_human", None)
        if human is None and console:
            human = _human_task_line(event_dict)
        line = json.dumps(event_dict, default=repr, ensure_ascii=False)
        return ((line, human), {})

    return render


def _make_logger(path: str | None, console: Any, **bound: Any) -> Any:
    import logging

    import structlog

    return structlog.wrap_logger(
        _Sink(path, console),
        processors=[
            structlog.processors.add_log_level,
            _add_timestamp,
            _render(console is not None),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        context_class=dict,
        cache_logger_on_first_use=False,
    ).bind(**bound)


def task_logger(path: str | None, *, console: bool = False, **bound: Any) -> Any:
    """The structlog logger behind ``ctx.log`` (works in process workers too)."""
    import sys

    from .._private.console import Console

    return _make_logger(path, Console(sys.stderr) if console else None, **bound)


def _human_task_line(d: MutableMapping[str, Any]) -> str:
    extras = " ".join(
        f"{k}={v}"
        for k, v in d.items()
        if k not in {"event", "level", "timestamp", "workflow", "run_id", "task", "attempt"}
    )
    clock = str(d.get("timestamp", ""))[11:19]
    return f"{clock} [{d.get('workflow')}] {d.get('task')}: {d.get('event')} {extras}".rstrip()


class LoggingListener:
    """Writes every event of a run to ``log_file`` as JSON and to ``console`` as a line."""

    def __init__(self, log_file: str | None, *, console: Any = None) -> None:
        self.log_file = log_file
        self.console = console
        self._failures: dict[str, BaseException] = {}  # final failures, for the summary

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Start listening on ``bus``; returns the function that stops it."""
        self._logger = _make_logger(self.log_file, None)
        return bus.subscribe(Event, self.handle)

    def handle(self, event: Event) -> None:
        level, name, fields = describe(event)
        getattr(self._logger, level)(name, **fields)
        if self.console is not None:
            text = self._human(event)
            if text:
                self.console.line(text)

    def _human(self, e: Event) -> str | None:
        c = self.console
        clock = time.strftime("%H:%M:%S", time.localtime(e.timestamp))
        head = f"{clock} [{e.workflow}]"
        if isinstance(e, WorkflowStarted):
            if not e.resumed:
                line = f"{head} run {e.run_id} started: {e.total_tasks} tasks on {e.executor}"
                return "\n".join([line, *(f"{head} note: {n}" for n in e.notes)])
            again = sum(len(v) for v in e.reasons.values())
            lines = [
                f"{head} run {e.run_id} resumed on {e.executor}: {e.restored} of "
                f"{e.total_tasks} tasks restored, {again} to run",
                *(f"{head} note: {n}" for n in e.notes),
            ]
            for reason, names in e.reasons.items():
                shown = ", ".join(names[:_SHOWN])
                more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
                lines.append(f"{head}   runs again ({reason}): {shown}{more}")
            return "\n".join(lines)
        if isinstance(e, TaskSucceeded):
            return f"{head} {_unit(e)} {c.paint('succeeded', 'green')} in {e.duration:.2f}s"
        if isinstance(e, TaskFailed):
            if not e.will_retry and len(self._failures) < _SHOWN_FAILURES:
                self._failures[_unit(e)] = e.error
            tail = " - will retry" if e.will_retry else ""
            word = c.paint("failed", "yellow" if e.will_retry else "red")
            return f"{head} {_unit(e)} {word} (attempt {e.attempt}): {error_text(e.error)}{tail}"
        if isinstance(e, TaskRetrying):
            return f"{head} {_unit(e)} retrying in {e.delay:.2f}s (attempt {e.attempt})"
        if isinstance(e, TaskSkipped):
            return f"{head} {_unit(e)} {c.paint('skipped', 'dim')}: {e.reason}"
        if isinstance(e, TaskCancelled):
            return f"{head} {_unit(e)} {c.paint('cancelled', 'yellow')}: {e.reason}"
        if isinstance(e, WorkflowFinished):
            colour = {"succeeded": "green", "failed": "red"}.get(e.status, "yellow")
            why = f" ({e.reason})" if e.reason else ""
            line = (
                f"{head} run {e.run_id} {c.paint(e.status, colour)}{why} in "
                f"{e.duration:.2f}s: {e.succeeded} succeeded, {e.failed} failed, "
                f"{e.skipped} skipped" + (f", {e.cancelled} cancelled" if e.cancelled else "")
            )
            failures, self._failures = self._failures, {}
            if e.status != "failed" or not failures:
                return line
            return "\n".join([line, *self._failure_lines(head, e, failures)])
        return None

    def _failure_lines(
        self, head: str, e: WorkflowFinished, failures: dict[str, BaseException]
    ) -> list[str]:
        """Each failed task's error and the end of its traceback, and where to look."""
        c = self.console
        lines = []
        for name, error in failures.items():
            lines.append(f"{head} {c.paint('failed', 'red')} {name}: {error_text(error)}")
            lines.extend(f"    {row}" for row in _traceback_tail(error))
        if e.failed > len(failures):
            lines.append(f"{head} ... and {e.failed - len(failures)} more failed tasks")
        where = f"flowforge status {e.run_id} --tasks"
        if self.log_file:
            where += f"; full tracebacks in {self.log_file}"
        lines.append(f"{head} details: {where}")
        return lines


_SHOWN_FAILURES = 5  # failed tasks whose tracebacks end a failed run's console output
_TAIL_LINES = 6


def _traceback_tail(error: BaseException) -> list[str]:
    """The last lines of an error's traceback where it was raised: a process worker's
    (its ``__cause__``), else its own."""
    import traceback

    remote = getattr(error.__cause__, "tb", None)
    try:
        if isinstance(remote, str):
            text = remote
        else:
            text = "".join(traceback.format_exception(type(error), error,
                                                      error.__traceback__, chain=False))
    except Exception:
        return []
    rows, skipping = [], False
    for row in text.rstrip().splitlines():
        if row.startswith('  File "'):  # a frame: FlowForge's own are not the user's
            skipping = row.startswith(f'  File "{_PACKAGE}')
        elif not row.startswith("    "):
            skipping = False
        if not skipping and row.strip() and row.strip() != '"""':
            rows.append(row)
    return rows[-_TAIL_LINES:] if len(rows) > 1 else []


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def describe(event: Event) -> tuple[str, str, dict[str, Any]]:
    """(level, event name, fields) for one event, as written to ``workflow.log``."""
    fields: dict[str, Any] = {
        "timestamp": event.timestamp,
        "workflow": event.workflow,
        "run_id": event.run_id,
    }
    level = "info"
    if isinstance(event, (TaskStarted, TaskSucceeded, TaskFailed, TaskRetrying, TaskSkipped,
                          TaskCancelled)):
        fields["task"] = event.task
        fields["attempt"] = event.attempt
        if event.index is not None:
            fields["index"] = event.index
    if isinstance(event, TaskSucceeded):
        fields["duration"] = round(event.duration, 6)
    elif isinstance(event, TaskFailed):
        fields["duration"] = round(event.duration, 6)
        fields["error"] = error_text(event.error)
        fields["error_type"] = type(event.error).__name__
        fields["will_retry"] = event.will_retry
        fields["traceback"] = _traceback_text(event.error)
        level = "warning" if event.will_retry else "error"
    elif isinstance(event, TaskRetrying):
        fields["delay"] = round(event.delay, 6)
        level = "warning"
    elif isinstance(event, TaskWaiting):
        fields["reason"] = event.reason
    elif isinstance(event, (TaskSkipped, TaskCancelled)):
        fields["reason"] = event.reason
        level = "warning"
    elif isinstance(event, WorkflowStarted):
        fields.update(total_tasks=event.total_tasks, executor=event.executor,
                      resumed=event.resumed, restored=event.restored)
        if event.reasons:
            fields["runs_again"] = {
                reason: _capped(names, _LOGGED) for reason, names in event.reasons.items()
            }
        if event.notes:
            fields["notes"] = list(event.notes)
            level = "warning"
    elif isinstance(event, WorkflowFinished):
        fields.update(status=event.status, duration=round(event.duration, 6),
                      succeeded=event.succeeded, failed=event.failed, skipped=event.skipped,
                      cancelled=event.cancelled)
        if event.reason:
            fields["reason"] = event.reason
        if event.error is not None:
            fields["error"] = error_text(event.error)
        level = "info" if event.status == "succeeded" else "error"
    name = _snake(type(event).__name__)
    return level, name, fields


def _unit(e: Any) -> str:
    """``task``, or ``task[3]`` for one item of a map or one iteration of a loop."""
    return e.task if e.index is None else f"{e.task}[{e.index}]"


def _capped(names: list[str], limit: int) -> list[str]:
    if len(names) <= limit:
        return names
    return [*names[:limit], f"... {len(names) - limit} more"]


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


_TRACEBACK_CHARS = 20_000  # a log line stays readable; the end of a traceback matters most


def _traceback_text(error: BaseException) -> str:
    """The error's formatted traceback, causes included (a process worker's traceback is
    the ``__cause__``), cut to its last ``_TRACEBACK_CHARS`` characters."""
    import traceback

    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:
        return ""
    return text if len(text) <= _TRACEBACK_CHARS else "..." + text[-_TRACEBACK_CHARS:]


def error_text(error: BaseException | None) -> str:
    """``Type: message`` for an error, safe when its ``__str__`` raises."""
    if error is None:
        return ""
    try:
        text = str(error)
    except Exception:
        text = "<unprintable>"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
