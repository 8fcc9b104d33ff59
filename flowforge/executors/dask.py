"""The Dask executor: task attempts run on a Dask distributed cluster (the ``dask`` extra).

``DaskExecutor()`` starts a ``LocalCluster`` sized to this machine on first use (its
keywords pass through: ``DaskExecutor(n_workers=2, threads_per_worker=1)``) and closes it
when the run ends; ``DaskExecutor(address="tcp://scheduler:8786")`` uses a running
cluster and leaves it running. The engine keeps the DAG and hands Dask each attempt as
its upstreams finish, so retries, conditions, maps, rate limits, events and autosave
behave as on the local executors.

An attempt travels like one for the process executor: pickled by the driver (so a
pickling failure names the task), run by ``run_packed`` on a worker, its outcome
pickled back. ``Resources(gpus=..., memory=...)`` become Dask worker resources
(``{"GPU": n, "MEMORY": bytes}``): such a task lands only on a worker that declared
them, and one no worker can satisfy is an error before it is sent. A worker that dies
mid-task: Dask runs the task again elsewhere; after Dask gives up
(``distributed.scheduler.allowed-failures``) the attempt fails with
:class:`~flowforge.errors.WorkerCrashedError`, which retries count.

Not yet: results still come back through the driver; passing them worker to worker as
Dask futures is the next step (issue 8).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from ..errors import WorkerCrashedError
from .base import Executor

__all__ = ["DaskExecutor"]


class DaskExecutor(Executor):
    """Runs attempts on a Dask cluster (see the module docstring)."""

    name = "dask"
    isolated = True

    def __init__(self, address: str | None = None, **cluster_options: Any) -> None:
        self.address = address
        self.cluster_options = cluster_options
        self._client: Any = None
        self._cluster: Any = None
        self._lock = threading.Lock()
        self._requests: dict[str, dict[str, float]] = {}
        self._remote: dict[Future[Any], Any] = {}
        self._threads: int | None = None

    # -- the cluster -----------------------------------------------------------------

    def client(self) -> Any:
        """The Dask client, connecting (or starting a LocalCluster) on first use."""
        with self._lock:
            if self._client is None:
                try:
                    from distributed import Client, LocalCluster
                except ImportError:
                    msg = (
                        "the Dask executor needs dask.distributed: "
                        "pip install 'flowforge[dask]'"
                    )
                    raise RuntimeError(msg) from None
                if self.address is None:
                    options = {"dashboard_address": None, "worker_dashboard_address": None,
                               **self.cluster_options}
                    self._cluster = LocalCluster(**options)
                    self._client = Client(self._cluster)
                else:
                    self._client = Client(self.address)
            return self._client

    @property
    def max_workers(self) -> int:  # type: ignore[override]
        """Threads across the cluster's workers (read once): attempts run at once."""
        if self._threads is None:
            info = self.client().scheduler_info()["workers"]
            self._threads = max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
        return self._threads

    def workers(self) -> list[dict[str, Any]]:
        """Each worker: address, threads, memory limit, running tasks, last heartbeat,
        resources."""
        client = self.client()
        processing = client.processing()
        out = []
        for address, w in client.scheduler_info()["workers"].items():
            out.append({
                "address": address,
                "threads": w.get("nthreads"),
                "memory_limit": w.get("memory_limit"),
                "running": len(processing.get(address, ())),
                "last_seen": w.get("last_seen"),
                "resources": dict(w.get("resources") or {}),
            })
        return out

    # -- what the engine calls -------------------------------------------------------

    def prepare(self, requests: dict[str, dict[str, float]]) -> None:
        """Dask resources per task name; a request no worker can satisfy is refused."""
        offered = [w["resources"] for w in self.workers()]
        for task, wanted in requests.items():
            if not any(all(r.get(k, 0) >= v for k, v in wanted.items()) for r in offered):
                have = "; ".join(str(r) for r in offered) or "no resources"
                msg = (
                    f"task {task!r} needs Dask worker resources {wanted}, but no worker "
                    f"offers them (workers offer: {have}); start a worker with "
                    f"--resources, e.g. dask worker ADDRESS --resources \"GPU=1\""
                )
                raise ValueError(msg)
        self._requests = dict(requests)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        client = self.client()
        task = args[-1] if args and isinstance(args[-1], str) else None
        resources = self._requests.get(task or "") or None
        remote = client.submit(fn, *args, pure=False, resources=resources, **kwargs)
        outer: Future[Any] = Future()
        outer.set_running_or_notify_cancel()
        self._remote[outer] = remote

        def done(f: Any) -> None:
            self._remote.pop(outer, None)
            if outer.done():
                return
            try:
                outer.set_result(f.result())
            except BaseException as exc:  # noqa: BLE001 - every outcome must arrive
                if type(exc).__name__ == "KilledWorker":
                    exc = WorkerCrashedError(
                        f"its Dask worker died while running it, too often to try again "
                        f"({exc})", exitcode=None, signal=None,
                    )
                outer.set_exception(exc)

        remote.add_done_callback(done)
        return outer

    def cancel_running(self, future: Future[Any]) -> bool:
        remote = self._remote.pop(future, None)
        if remote is not None:
            remote.cancel()
        if not future.done():
            future.set_exception(WorkerCrashedError("cancelled", exitcode=None, signal=None))
        return True

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        self._threads = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
