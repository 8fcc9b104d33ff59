"""The Dask executor: task attempts run on a Dask distributed cluster (the ``dask`` extra).

``DaskExecutor()`` starts a ``LocalCluster`` sized to this machine on first use (its
keywords pass through: ``DaskExecutor(n_workers=2, threads_per_worker=1)``) and closes it
when the run ends; ``DaskExecutor(address="tcp://scheduler:8786")`` uses a running
cluster and leaves it running. The engine keeps the DAG and hands Dask each attempt as
its upstreams finish, so retries, conditions, maps, rate limits, events and autosave
behave as on the local executors.

Results stay on the workers. Each attempt is pickled by the driver (so a pickling
failure names the task) and run by ``run_held`` on a worker, which keeps the value there
as the Dask future's data; a second, tiny Dask task (``report_held``, placed by Dask
next to that data) tells the driver how it went. A result under ``share_threshold``
bytes (``dask.sizeof``) comes back in that report; a larger one stays on the worker,
and the driver holds a :class:`DaskResult` (the Dask future). A downstream attempt gets
such inputs as Dask futures passed beside its pickled call, so Dask moves them worker
to worker and the driver never holds them. With autosave, the worker itself writes a
large result into the run's state folder (a file, as the process executor does): the
journal records that file, and a resume maps it. The state folder must then be a path
every worker can write (one machine, or a shared file system); the driver fetches a
held value only when it needs it itself (a condition, a branch, a map's list, a thread
task's input) and, with autosave off, for the ``RunResult`` at the end.

A held result whose worker dies is recomputed by Dask from its lineage when a task needs
it: the task runs again on the cluster without FlowForge counting an attempt (tasks with
side effects should be idempotent, as under any at-least-once scheduler). Should that
fail too, the task that needed the result fails with the recomputation's error.

``Resources(cpus=..., gpus=..., memory=...)`` become Dask worker resources (``{"CPU":
n, "GPU": n, "MEMORY": bytes}``): such a task lands only on a worker that declared them,
and one no worker can satisfy is a :class:`~flowforge.errors.WorkflowDefinitionError`
before anything runs. The LocalCluster FlowForge starts offers the machine's share per
worker (its threads as ``CPU``, its memory limit as ``MEMORY``, whole GPUs as ``GPU``);
on a cluster given by address, a ``cpus=`` request counts only if some worker declares
``CPU`` (workers started without it take any task, as before).

A worker that dies mid-task: Dask runs the task again elsewhere; after Dask gives up
(``distributed.scheduler.allowed-failures``) the attempt fails with
:class:`~flowforge.errors.WorkerCrashedError`, which retries count.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any

from .._resultfiles import Handle, ResultFile
from ..errors import WorkerCrashedError
from .base import AttemptCall, Executor

__all__ = ["DaskExecutor", "DaskResult"]


class DaskResult(Handle):
    """A task result held on a Dask worker: the driver's handle to it."""

    __slots__ = ("future", "nbytes", "saved", "_executor", "_value")
    _value: Any

    def __init__(self, future: Any, nbytes: int, saved: ResultFile | None,
                 executor: DaskExecutor) -> None:
        self.future = future
        self.nbytes = nbytes
        self.saved = saved
        self._executor = executor

    @property
    def file(self) -> ResultFile | None:
        return self.saved

    def load(self) -> Any:
        """The value: mapped from its saved file if there is one, else fetched."""
        try:
            return self._value
        except AttributeError:
            pass
        if self.saved is not None:
            value = self.saved.load()
        else:
            ok, value = self.future.result()
            if not ok:  # lost with its worker, and Dask's recomputation failed
                from .._private.remote import unpack_outcome

                unpack_outcome(value, "<held result>")  # raises the recomputation's error
            self._executor.fetched += self.nbytes
        self._value = value
        return value

    def __reduce__(self) -> tuple[Any, ...]:  # sent to a process worker: send the value
        return (_identity, (self.load(),))

    def __repr__(self) -> str:
        return f"DaskResult({self.future.key!r}, {self.nbytes} bytes)"


def _identity(value: Any) -> Any:
    return value


class DaskExecutor(Executor):
    """Runs attempts on a Dask cluster (see the module docstring).

    ``fetched`` counts the bytes of held results the driver has fetched from workers.
    """

    name = "dask"
    on_cluster = True  # large results stay on the workers (see SharesResults)

    def __init__(
        self, address: str | None = None, *, share_threshold: int = 1 << 20,
        **cluster_options: Any,
    ) -> None:
        self.address = address
        self.share_threshold = share_threshold
        self.fetched = 0
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
                    options.setdefault("resources", _local_resources(options))
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
        from ..errors import WorkflowDefinitionError

        offered = [w["resources"] for w in self.workers()]
        if not any("CPU" in r for r in offered):  # CPUs not declared: not counted
            requests = {t: {k: v for k, v in w.items() if k != "CPU"}
                        for t, w in requests.items()}
            requests = {t: w for t, w in requests.items() if w}
        for task, wanted in requests.items():
            if not any(all(r.get(k, 0) >= v for k, v in wanted.items()) for r in offered):
                have = "; ".join(str(r) for r in offered) or "no resources"
                where = ("the LocalCluster FlowForge started" if self.address is None
                         else f"the cluster at {self.address}")
                msg = (
                    f"task {task!r} asks Resources {_as_resources(wanted)}, but no worker "
                    f"of {where} offers that much (workers offer: {have}); ask for less, "
                    "or start workers that declare it, e.g. dask worker ADDRESS "
                    "--resources \"GPU=1\""
                )
                raise WorkflowDefinitionError(msg, task=task, option="resources")
        self._requests = dict(requests)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        client = self.client()
        task = args[-1] if args and isinstance(args[-1], str) else None
        resources = self._requests.get(task or "") or None
        remote = client.submit(fn, *args, pure=False, resources=resources, **kwargs)
        return self._follow((remote,), _same)

    def submit_attempt(self, call: AttemptCall) -> Future[Any]:
        """Run one attempt, its held inputs passed as Dask futures; the value stays on
        the worker (see the module docstring). ``solo`` is the process executor's;
        Dask's scheduler places attempts here."""
        from .._private.remote import pack_call, report_held, run_held

        name, policy = call.name, call.policy
        futures: list[Any] = []
        payload = pack_call(call.task, _take_inputs(call.kwargs, futures), call.env, policy)
        client = self.client()
        resources = self._requests.get(name) or None
        held = client.submit(run_held, payload, name, *futures, pure=False,
                             resources=resources)
        report = client.submit(report_held, held, policy, self.share_threshold, name,
                               pure=False)
        return self._follow((held, report), lambda data: self._received(data, held))

    def _follow(self, remotes: tuple[Any, ...], convert: Any) -> Future[Any]:
        """A local future for the last of ``remotes`` (Dask futures, kept so that
        cancelling can release them): ``convert`` of its result, or WorkerCrashedError."""
        outer: Future[Any] = Future()
        outer.set_running_or_notify_cancel()
        self._remote[outer] = remotes

        def done(f: Any) -> None:
            self._remote.pop(outer, None)
            if outer.done():
                return
            try:
                data = f.result()
            except BaseException as exc:  # noqa: BLE001 - every outcome must arrive
                _settle(outer, error=_crashed(exc))
                return
            _settle(outer, convert(data))

        remotes[-1].add_done_callback(done)
        return outer

    def _received(self, data: bytes | tuple[str, int, str | None], held: Any) -> Any:
        """The report's outcome; a held one becomes a :class:`DaskResult`."""
        from .._private.remote import Unpacked

        if type(data) is not tuple:
            return data
        _, size, path = data
        saved = None if path is None else ResultFile(path, size)
        return Unpacked(DaskResult(held, size, saved, self))

    def cancel_running(self, future: Future[Any]) -> bool:
        """Stop waiting for ``future``. Dask cannot interrupt a task a worker has begun:
        it is abandoned (runs on, its result dropped), so this returns False."""
        with contextlib.suppress(InvalidStateError):
            future.set_exception(WorkerCrashedError("cancelled", exitcode=None, signal=None))
        for remote in self._remote.pop(future, ()):
            remote.cancel()
        return False

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        self._threads = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _crashed(exc: BaseException) -> BaseException:
    if type(exc).__name__ == "KilledWorker":
        return WorkerCrashedError(
            f"its Dask worker died while running it, too often to try again ({exc})",
            exitcode=None, signal=None,
        )
    return exc


def _take_inputs(kwargs: dict[str, Any], futures: list[Any]) -> dict[str, Any]:
    """``kwargs`` with each held result replaced by an ``Input`` marker, its Dask future
    appended to ``futures`` (at the top, in a list, or in a ``ctx``'s inputs)."""
    from .._private.remote import Input
    from .._resultfiles import map_inputs

    def take(v: Any) -> Any:
        if isinstance(v, DaskResult):
            futures.append(v.future)
            return Input(len(futures) - 1)
        if type(v) is list and any(isinstance(x, DaskResult) for x in v):
            return [take(x) for x in v]
        return v  # a file's handle (ResultFile) travels as it is: the worker maps it

    return map_inputs(kwargs, take)


def _same(data: Any) -> Any:
    return data


def _settle(outer: Future[Any], value: Any = None, *, error: BaseException | None = None) -> None:
    """Set ``outer`` once: it may have been cancelled (a timeout) meanwhile."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(value)


def _local_resources(options: dict[str, Any]) -> dict[str, float]:
    """What each worker of a LocalCluster sized by ``options`` offers as Dask resources:
    its threads as CPU, its share of this machine's memory, its whole GPUs."""
    import os

    import psutil
    from distributed.deploy.utils import nprocesses_nthreads

    cpus = os.cpu_count() or 1
    given_workers: Any = options.get("n_workers")
    given_threads: Any = options.get("threads_per_worker")
    if given_workers is None and given_threads is None:  # as LocalCluster sizes itself
        workers, threads = nprocesses_nthreads(cpus) if options.get("processes", True) else (
            1, cpus)
    elif given_workers is None:
        threads = max(int(given_threads), 1)
        workers = max(1, cpus // threads)
    else:
        workers = max(int(given_workers), 1)
        threads = (max(1, cpus // workers) if given_threads is None
                   else max(int(given_threads), 1))
    workers = max(int(workers), 1)
    offered = {"CPU": float(threads),
               "MEMORY": float(psutil.virtual_memory().total // workers)}
    from .._private.gpus import NvmlInventory

    gpus = NvmlInventory().count() // workers
    if gpus:
        offered["GPU"] = float(gpus)
    return offered


def _as_resources(wanted: dict[str, float]) -> str:
    """A Dask request in the words of ``Resources(...)``."""
    names = {"CPU": "cpus", "GPU": "gpus", "MEMORY": "memory"}
    return "(" + ", ".join(
        f"{names.get(k, k)}={v / 2**30:.1f} GiB" if k == "MEMORY" else f"{names.get(k, k)}={v:g}"
        for k, v in wanted.items()
    ) + ")"
