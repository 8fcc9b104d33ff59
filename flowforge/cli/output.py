"""What the ``flowforge`` commands print and return: exit codes, tables, JSON, and a
saved run as a row (for ``list``, ``history`` and ``status``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = [
    "CANCELLED", "FAILED", "OK", "USAGE", "manager_of", "output", "print_json", "run_json",
    "run_row", "run_rows", "table", "text_row", "when",
]

OK, FAILED, USAGE = 0, 1, 2
CANCELLED = 130  # as a shell reports a command ended by Ctrl-C (128 + SIGINT)


def run_json(result: Any) -> dict[str, Any]:
    """A finished run for scripts: status, counts by state, results (JSON where they
    are, else their repr), the error."""
    counts: dict[str, int] = {"total": len(result.tasks)}
    for state in ("succeeded", "failed", "cancelled", "skipped", "pending"):
        counts[state] = sum(1 for t in result.tasks.values() if t.state == state)
    results = {}
    for name in result.results:
        value = result.results[name]
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        results[name] = value
    return {"workflow": result.workflow, "run_id": result.run_id,
            "status": result.status.value, **counts,
            "duration": round(result.finished - result.started, 6),
            "error": None if result.error is None else str(result.error),
            "results": results}


def manager_of(args: argparse.Namespace) -> Any:
    from ..persistence.manager import PersistenceManager, folder_store

    return PersistenceManager(args.state_dir, store=folder_store(args.state_dir))


def run_rows(args: argparse.Namespace, workflow: str | None) -> list[dict[str, Any]]:
    """Saved runs as rows, newest first; a run whose summary cannot be read is a row with
    status ``unreadable`` and its ``reason``, also said on stderr: one damaged file must
    not hide the other runs."""
    unreadable: list[Any] = []
    runs = manager_of(args).runs(workflow, unreadable=unreadable)
    dated = [(i.started, run_row(i)) for i in runs]
    for bad in unreadable:
        print(f"flowforge {args.command}: run {bad.run_id} of {bad.workflow!r} is unreadable: "
              f"{bad.reason}", file=sys.stderr)
        dated.append((bad.modified or 0.0, {
            "workflow": bad.workflow, "run_id": bad.run_id, "status": "unreadable",
            "started": when(bad.modified), "finished": None, "duration": None,
            "total": None, "job": None, "reason": bad.reason}))
    for note in manager_of(args).store.quarantined():
        if workflow is None or note.get("workflow") == workflow:
            dated.append((float(note.get("when") or 0.0), {
                "workflow": note.get("workflow"), "run_id": note.get("run_id"),
                "status": "quarantined", "started": when(note.get("when")),
                "finished": None, "duration": None, "total": None, "job": None,
                "reason": f"{note.get('why')} (set aside in {note.get('where')})"}))
    dated.sort(key=lambda pair: (pair[0], pair[1]["run_id"]), reverse=True)
    return [row for _, row in dated]


def when(stamp: float | None) -> str | None:
    """A time as ISO 8601 with its offset, in this machine's zone."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


_COUNTS = ("succeeded", "failed", "cancelled", "skipped", "interrupted")


def run_row(info: Any) -> dict[str, Any]:
    """A run for --json: counts as integers named after the states, ISO times; a run
    still going has lasted until now."""
    end = info.finished
    if end is None and info.status == "running":
        end = time.time()
    running = info.total - sum(getattr(info, c) for c in _COUNTS)
    return {"workflow": info.workflow, "run_id": info.run_id, "status": info.status,
            "started": when(info.started), "finished": when(info.finished),
            "duration": None if end is None else round(end - info.started, 3),
            "total": info.total, **{c: getattr(info, c) for c in _COUNTS},
            "running": running if info.status == "running" else 0,
            "restored": info.restored, "job": info.job}


def text_row(row: dict[str, Any]) -> dict[str, Any]:
    """A --json row as the text tables show it: times to the second, counts in one cell."""
    out = dict(row)
    for key in ("started", "finished"):
        if out.get(key):
            out[key] = out[key][:19].replace("T", " ")
    if row.get("total") is not None:
        parts = [f"{row['succeeded']}/{row['total']} ok"]
        parts += [f"{row[c]} {c}" for c in ("failed", "cancelled", "skipped", "interrupted",
                                              "running", "restored") if row.get(c)]
        out["tasks"] = ", ".join(parts)
    for key in (*_COUNTS, "total", "running", "restored"):
        out.pop(key, None)
    return out


def output(
    args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str],
    as_text: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    if getattr(args, "json", False):
        print_json(rows)
        return
    if not rows:
        print("nothing yet")
        return
    table([as_text(r) for r in rows] if as_text is not None else rows, columns)


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    bold = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    head = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    head = head.rstrip()
    print(f"\033[1m{head}\033[0m" if bold else head)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
