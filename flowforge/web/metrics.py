"""Prometheus metrics of the dashboard (``GET /api/v1/metrics``), in a registry of its own.

Two sources, each the natural one for its metric:

- at each scrape, from the state folder: ``flowforge_runs`` (saved runs by workflow and
  status, ``unreadable`` for a run whose summary cannot be read) and
  ``flowforge_tasks_waiting`` (tasks of running runs waiting for resources);
- from the live events this server received since it started (so they are counters, as
  Prometheus expects): ``flowforge_task_duration_seconds`` (a histogram, by workflow and
  outcome), ``flowforge_task_retries_total`` and ``flowforge_live_events_total``.

The registry is built per app, never prometheus-client's global one, so two apps (or
tests) in one process do not share or collide.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .reader import StateReader

__all__ = ["CONTENT_TYPE", "DashboardMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


class DashboardMetrics:
    """The app's registry; :meth:`observe` takes every live event."""

    def __init__(self, reader: StateReader) -> None:
        self.registry = CollectorRegistry()
        self.task_duration = Histogram(
            "flowforge_task_duration_seconds",
            "Duration of task attempts seen live by this server, by workflow and outcome",
            ["workflow", "outcome"], buckets=_BUCKETS, registry=self.registry,
        )
        self.retries = Counter(
            "flowforge_task_retries", "Task retries seen live by this server",
            ["workflow"], registry=self.registry,
        )
        self.events = Counter(
            "flowforge_live_events", "Live events received from runs", registry=self.registry,
        )
        self._waiting: dict[tuple[str, str, str, Any], None] = {}  # (wf, run, task, index)
        self._lock = threading.Lock()
        self.registry.register(_StateCollector(reader, self))

    def observe(self, msg: dict[str, Any]) -> None:
        """Count one live event (a decoded datagram)."""
        self.events.inc()
        kind = msg.get("kind")
        workflow = str(msg.get("workflow", ""))
        if kind in ("task_succeeded", "task_failed") and msg.get("duration") is not None:
            outcome = "succeeded" if kind == "task_succeeded" else "failed"
            self.task_duration.labels(workflow, outcome).observe(float(msg["duration"]))
        elif kind == "task_retrying":
            self.retries.labels(workflow).inc()
        key = (workflow, str(msg.get("run_id")), str(msg.get("task")), msg.get("index"))
        with self._lock:
            if kind == "task_waiting":
                self._waiting[key] = None
            elif kind == "workflow_finished":
                run_id = key[1]
                for k in [k for k in self._waiting if k[1] == run_id]:
                    del self._waiting[k]
            elif kind is not None and kind.startswith("task_"):
                self._waiting.pop(key, None)

    def waiting(self) -> dict[str, int]:
        """Tasks waiting for resources now, per workflow (from live events)."""
        out: dict[str, int] = {}
        with self._lock:
            for workflow, *_ in self._waiting:
                out[workflow] = out.get(workflow, 0) + 1
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Metrics computed at scrape time from the state folder and the live waits."""

    def __init__(self, reader: StateReader, metrics: DashboardMetrics) -> None:
        self._reader = reader
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "flowforge_runs", "Saved runs in the state folder, by workflow and status",
            labels=["workflow", "status"],
        )
        counts: dict[tuple[str, str], int] = {}
        running: set[str] = set()
        readable, unreadable = self._reader.listing()
        for info in readable:
            counts[(info.workflow, info.status)] = counts.get((info.workflow, info.status), 0) + 1
            if info.status == "running":
                running.add(info.workflow)
        for bad in unreadable:  # counted, so an alert can notice a damaged state folder
            counts[(bad.workflow, "unreadable")] = counts.get((bad.workflow, "unreadable"), 0) + 1
        for (workflow, status), n in sorted(counts.items()):
            runs.add_metric([workflow, status], n)
        yield runs
        waiting = GaugeMetricFamily(
            "flowforge_tasks_waiting",
            "Tasks of running runs waiting for resources (CPUs, memory, GPUs, pools, rate "
            "limits)", labels=["workflow"],
        )
        for workflow, n in sorted(self._metrics.waiting().items()):
            if workflow in running:
                waiting.add_metric([workflow], n)
        yield waiting
