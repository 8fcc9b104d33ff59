"""The job table: what the scheduler remembers between restarts, in the state folder.

``<state_dir>/scheduler/jobs.json`` (owner-only, replaced atomically) holds, per job
name, its schedule and the last fire time it handled, as a UTC instant. A fire time is
written *before* its run starts (with ``last_status`` "running"), so a scheduler killed
mid-run never starts that fire anew after a restart: it resumes that fire's run, and
one that was down picks up the fire times it missed, as the job's ``catchup`` says. The
table is checked as it is read: a bad value names the file, the job and the field.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..persistence import _frames

__all__ = ["JobInfo", "JobTable", "as_info", "next_run"]


@dataclass(frozen=True)
class JobInfo:
    """One job as :meth:`Scheduler.jobs` lists it."""

    name: str
    workflow: str
    schedule: str
    enabled: bool
    next_run: datetime | None
    last_fire: datetime | None
    last_run_id: str | None
    last_status: str | None
    running: bool


class JobTable:
    """Last fire time, last run and paused state per job name, kept on disk."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(state_dir), "scheduler", "jobs.json")
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                rows = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            msg = (
                f"the scheduler's job table {self.path} cannot be read ({exc}); move it "
                "aside to start the schedule afresh"
            )
            from ..errors import StateError

            raise StateError(msg, path=self.path) from exc
        if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
            from ..errors import StateError

            msg = (
                f"the scheduler's job table {self.path} is not a table of jobs; move it "
                "aside to start the schedule afresh"
            )
            raise StateError(msg, path=self.path)
        for name, row in rows.items():
            _check_row(self.path, name, row)
        return rows

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._rows.get(name, {}))

    def update(self, job: str, **fields: Any) -> None:
        with self._lock:
            row = self._rows.setdefault(job, {})
            row.update(fields)
            self._write()

    def remove(self, name: str) -> None:
        with self._lock:
            if self._rows.pop(name, None) is not None:
                self._write()

    def names(self) -> list[str]:
        with self._lock:
            return list(self._rows)

    def _write(self) -> None:
        _frames.make_dirs(os.path.dirname(self.path))
        _frames.write_atomic(
            self.path, json.dumps(self._rows, indent=1, sort_keys=True).encode(), fsync=False
        )


_TEXT = ("name", "workflow", "schedule", "cron", "timezone", "at", "last_run_id",
         "last_status")
_TIMES = ("last_fire", "added")


def _check_row(path: str, job: str, row: dict[str, Any]) -> None:
    """Refuse a job entry with a value of the wrong kind, naming file, job and field."""
    from ..errors import StateError

    def bad(field: str, why: str) -> StateError:
        return StateError(
            f"the scheduler's job table {path}: job {job!r}: {field} {why}; fix that "
            "value, or remove the job's entry to schedule it afresh", path=path)

    for field in _TEXT:
        if row.get(field) is not None and not isinstance(row[field], str):
            raise bad(field, f"must be text, got {type(row[field]).__name__}")
    if "enabled" in row and not isinstance(row["enabled"], bool):
        raise bad("enabled", f"must be true or false, got {row['enabled']!r}")
    for field in _TIMES:
        value = row.get(field)
        if value is None:
            continue
        try:
            when = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise bad(field, f"must be an ISO 8601 time with its offset, got {value!r}")


def as_info(row: dict[str, Any], **extra: Any) -> JobInfo:
    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    fields = {
        "name": row.get("name", ""),
        "workflow": row.get("workflow", ""),
        "schedule": row.get("schedule", ""),
        "enabled": bool(row.get("enabled", True)),
        "next_run": None,
        "last_fire": when(row.get("last_fire")),
        "last_run_id": row.get("last_run_id"),
        "last_status": row.get("last_status"),
        "running": False,
    }
    fields.update(extra)
    return JobInfo(**fields)


def next_run(row: dict[str, Any], now: datetime) -> datetime | None:
    """When a job the table remembers fires next (for listings without a Scheduler)."""
    from .triggers import CronTrigger, OnceTrigger

    trigger: CronTrigger | OnceTrigger
    if row.get("cron"):
        trigger = CronTrigger(row["cron"], row.get("timezone") or "UTC")
    elif row.get("at"):
        trigger = OnceTrigger(row["at"])
    else:
        return None
    anchor = row.get("last_fire") or row.get("added")
    start = max(now, datetime.fromisoformat(anchor)) if isinstance(anchor, str) else now
    return trigger.next_after(start)
