"""A layered drawing of a DAG: which column and row each task takes on the run page.

Columns are layers: a task sits one column right of its furthest upstream task (the
longest path from a source), so every edge points right. Within a column, tasks are
ordered by the mean row of their upstream tasks (a barycenter sweep), which keeps most
edges short and uncrossed. The browser turns columns and rows into an inline SVG; nothing
here draws, and nothing outside the package is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["MAX_DRAWN", "grid", "layered"]

#: Runs with more tasks than this get a table but no drawing: a picture of thousands of
#: boxes helps nobody and costs the browser.
MAX_DRAWN = 400


def layered(
    order: Sequence[str], upstream: Mapping[str, Iterable[str]]
) -> dict[str, tuple[int, int]]:
    """``{task: (layer, row)}`` for tasks in topological ``order`` (upstreams first)."""
    layer: dict[str, int] = {}
    for name in order:
        ups = [u for u in upstream.get(name, ()) if u in layer]
        layer[name] = 1 + max((layer[u] for u in ups), default=-1)
    columns: dict[int, list[str]] = {}
    for name in order:
        columns.setdefault(layer[name], []).append(name)
    row: dict[str, int] = {}
    for col in sorted(columns):
        names = columns[col]
        if col:
            def weight(name: str) -> float:
                rows = [row[u] for u in upstream.get(name, ()) if u in row]
                return sum(rows) / len(rows) if rows else float("inf")

            names.sort(key=weight)  # stable: ties keep the definition order
        for i, name in enumerate(names):
            row[name] = i
    return {name: (layer[name], row[name]) for name in order}


def grid(names: Sequence[str], rows: int = 10) -> dict[str, tuple[int, int]]:
    """``{task: (column, row)}`` filling columns of ``rows``: for runs whose edges are
    unknown (the dashboard was not given the workflow's file)."""
    return {name: (i // rows, i % rows) for i, name in enumerate(names)}
