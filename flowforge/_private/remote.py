"""Sending one task attempt to a process worker and its outcome back.

The driver pickles the call itself (``pack_call``) so a pickling failure names the task
and the object at fault instead of surfacing as a bare ``PicklingError`` inside loky. The
worker (``run_packed``) never lets an exception escape: it returns bytes holding either
``("ok", value)`` or ``("error", exception, traceback_text)``. An exception that cannot be
pickled, unpickled or even printed is replaced by a :class:`RemoteTaskError` naming the
original type, so the worker survives it. The driver (``unpack_outcome``) re-raises the
error with the worker's traceback as its ``__cause__``, as ``concurrent.futures`` does.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any, NamedTuple

import cloudpickle

from .._async import not_a_coroutine
from .._fixtures import FixtureRef, resolve_refs, worker_pool
from .._resultfiles import FilePolicy, dump_outcome, map_inputs, materialize_inputs, write_file
from ..errors import RemoteTaskError, TaskSerializationError

__all__ = [
    "Input", "RemoteTraceback", "init_worker", "pack_batch", "pack_call", "report_held",
    "Unpacked", "run_batch", "run_held", "run_packed", "unpack_outcome",
]


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback; shown as the ``__cause__`` of its error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


# -- driver side -----------------------------------------------------------------------


def pack_call(
    task: Any, kwargs: dict[str, Any], env: dict[str, str] | None = None,
    policy: FilePolicy | None = None,
) -> bytes:
    """Pickle one attempt of ``task`` (and the environment variables it runs with, such as
    ``CUDA_VISIBLE_DEVICES``, and where a large result goes: see :mod:`flowforge._resultfiles`); on
    failure name the object that would not pickle."""
    try:
        return cloudpickle.dumps((task, kwargs, env, policy), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        culprit = _find_culprit(task, kwargs)
        msg = (
            f"task {task.name!r} cannot be sent to a process worker: {culprit} cannot be "
            f"pickled ({type(exc).__name__}: {exc}); create it inside the task, pass plain "
            "data instead, or run this task with executor='thread'"
        )
        raise TaskSerializationError(msg, task=task.name, what=culprit) from exc


def pack_batch(calls: list[Any]) -> bytes:
    """Pickle several attempts ``(task, kwargs, env, policy)`` at once: a task shared by
    them (a map's items) is pickled once. Raises what pickling raises."""
    return cloudpickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)


class Unpacked(NamedTuple):
    """A successful outcome an executor already unpickled (to look inside it)."""

    value: Any


def unpack_outcome(data: bytes | Unpacked, task: str) -> Any:
    """Return the worker's value or raise its error (with its traceback as cause)."""
    if type(data) is Unpacked:
        return data.value
    try:
        outcome = pickle.loads(data)  # type: ignore[arg-type]
    except Exception as exc:
        msg = (
            f"task {task!r} finished in its worker, but its outcome cannot be unpickled in "
            f"the driver ({type(exc).__name__}: {exc}); make its result or exception "
            "class importable from a module rather than defined in a function"
        )
        raise RemoteTaskError(msg, task=task, original_type=None) from exc
    return _value_of(outcome)


def _value_of(outcome: tuple[Any, ...]) -> Any:
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "pickled":
        return pickle.loads(outcome[1])
    _, error, tb = outcome
    error.__cause__ = RemoteTraceback(tb)
    raise error


def _find_culprit(task: Any, kwargs: dict[str, Any]) -> str:
    """Describe the first piece of an attempt that does not pickle on its own."""
    fn = getattr(task, "fn", None) or task
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None)
    if code is not None and closure:
        for var, cell in zip(code.co_freevars, closure, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if not _pickles(value):
                return f"closure variable {var!r} ({type(value).__name__})"
    if code is not None:
        fn_globals = getattr(fn, "__globals__", {})
        for var in code.co_names:
            if var in fn_globals and not _pickles(fn_globals[var]):
                return f"global {var!r} ({type(fn_globals[var]).__name__})"
    for name, value in kwargs.items():
        if not _pickles(value):
            return f"input {name!r} ({type(value).__name__})"
    return f"the task function {getattr(fn, '__qualname__', fn)!r}"


def _pickles(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


# -- worker side -----------------------------------------------------------------------


def init_worker(
    parent_pid: int, fork_server_pid: int | None = None, env: dict[str, str] | None = None
) -> None:
    """Loky worker initializer: leave Ctrl-C to the driver, and exit if it dies. A worker
    forked by the fork server watches that server instead, which exits when the driver
    does, and takes ``env``, the driver's environment as the worker started (the server
    has its own, from when it started), with loky's settings read from it.

    It also moves every object the worker's start-up made (loky, cloudpickle, psutil:
    some 20,000 objects) out of the garbage collector's sight (``gc.freeze``), as
    pre-forking servers do: they live as long as the worker, and the collector no longer
    walks them, neither in the tasks' collections nor at exit, where walking them took
    most of a worker's shutdown (16 ms of it down to 5 here); ``run()`` waits for that.
    Debugging helpers in a task (``gc.get_objects``, ``gc.get_referrers``) no longer see
    them either; ``gc.unfreeze()`` in a task gives them back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lead a process group of its own, which its tasks' children join: the executor
    # ends them with it (executors/_deathwatch.py).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    if fork_server_pid is not None:
        from .forkserver import release_server

        release_server()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
        time.tzset()
        import loky.process_executor as loky_executor  # read at import: in the server

        loky_executor._MAX_MEMORY_LEAK_SIZE = int(
            float(os.environ.get("LOKY_MAX_MEMORY_LEAK_SIZE", 3e8))
        )
    gc.freeze()

    parent = os.getppid()  # the one that started it: whoever adopts it later is not
    if parent not in (parent_pid, fork_server_pid):  # (a subreaper, PID 1 in a container)
        os._exit(1)  # gone before this worker even started

    def watch_parent() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch_parent, name="flowforge-watchdog", daemon=True).start()


def run_packed(payload: bytes, task_name: str) -> bytes:
    """Run one packed attempt in a worker; always returns an outcome, never raises."""
    try:
        task, kwargs, env, policy = pickle.loads(payload)
    except BaseException as exc:
        return _unpicklable(task_name, exc)
    return _run_one(task, kwargs, env, policy, task_name)


def run_batch(
    payload: bytes, names: list[str], budget: float = float("inf"), claim: str | None = None
) -> list[tuple[bytes, float]]:
    """Run a batch of attempts (``pack_batch``) one after another in a worker: each one's
    outcome and duration in seconds. Once ``budget`` seconds have gone (the attempts were
    slower than measured before), it stops and returns the outcomes it has: the executor
    sends the rest again. Never raises.

    ``claim``: a batch sent ahead starts only if this worker deletes that file first; if
    it is gone, the driver took the batch back for another worker: nothing runs, and the
    empty list says so."""
    if claim is not None:
        try:
            os.unlink(claim)
        except FileNotFoundError:
            return []
        except OSError:  # not deleted by the driver either: it still counts as ours
            pass
    try:
        calls = pickle.loads(payload)
    except BaseException as exc:
        return [(_unpicklable(name, exc), 0.0) for name in names]
    out: list[tuple[bytes, float]] = []
    clock = time.perf_counter
    start = clock()
    for (task, kwargs, env, policy), name in zip(calls, names, strict=True):
        if out and clock() - start > budget:
            break
        t0 = clock()
        outcome = _run_one(task, kwargs, env, policy, name)
        out.append((outcome, clock() - t0))
    return out


def _unpicklable(task_name: str, exc: BaseException) -> bytes:
    msg = (
        f"task {task_name!r} could not be unpickled in its worker "
        f"({type(exc).__name__}: {_safe_str(exc)}); define it in an importable module "
        "or make sure its inputs are plain data"
    )
    return _serialization_error(task_name, msg, "the task or its inputs")


def _serialization_error(task_name: str, msg: str, what: str) -> bytes:
    """A packed :class:`TaskSerializationError` for the exception being handled."""
    err = TaskSerializationError(msg, task=task_name, what=what)
    return _pack_error(task_name, err, traceback.format_exc())


def _run_one(
    task: Any, kwargs: dict[str, Any], env: dict[str, str] | None, policy: FilePolicy | None,
    task_name: str,
) -> bytes:
    ok, value = _call(task, kwargs, env, policy, task_name)
    return _dump_value(value, policy, task_name) if ok else value


def _call(
    task: Any, kwargs: dict[str, Any], env: dict[str, str] | None, policy: FilePolicy | None,
    task_name: str,
) -> tuple[bool, Any]:
    """Run one attempt: (True, its value) or (False, its packed error)."""
    saved = {k: os.environ.get(k) for k in env} if env else None
    try:
        if env:
            os.environ.update(env)  # for this attempt only: restored below
        if any(isinstance(v, FixtureRef) for v in kwargs.values()):
            resolve_refs(kwargs, worker_pool())  # made once per worker, kept for its life
        kwargs = materialize_inputs(kwargs)  # handles to large results (see _resultfiles)
        return True, not_a_coroutine(task_name, task.callable(**kwargs))
    except BaseException as exc:
        return False, _pack_error(task_name, exc, traceback.format_exc())
    finally:
        if saved:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


def _dump_value(value: Any, policy: FilePolicy | None, task_name: str) -> bytes:
    """A success's outcome for the pipe (large results to a file: see _resultfiles)."""
    try:
        return dump_outcome(value, policy)
    except OSError as exc:
        assert policy is not None
        msg = (
            f"task {task_name!r} returned a large result that could not be written to "
            f"{policy.folder} ({type(exc).__name__}: {_safe_str(exc)}); free space there, "
            "or raise the executor's share_threshold"
        )
        return _serialization_error(task_name, msg, "result")
    except Exception as exc:
        msg = (
            f"task {task_name!r} returned a {type(value).__name__} that cannot be pickled "
            f"({type(exc).__name__}: {_safe_str(exc)}); return plain data, or run this "
            "task with executor='thread'"
        )
        return _serialization_error(task_name, msg, "result")


# -- on a cluster's worker (Dask) ------------------------------------------------------


class Input:
    """Stands in a packed attempt for the upstream result passed beside it (a Dask
    future the cluster resolves on the worker): the ``index``-th extra argument."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Input, (self.index,))


def run_held(payload: bytes, task_name: str, *inputs: Any) -> tuple[bool, Any]:
    """Run one attempt on a cluster worker and keep its value there: (True, value) or
    (False, packed error). ``inputs`` are upstream results held the same way (Dask
    fetches them from the workers that have them)."""
    try:
        task, kwargs, env, policy = pickle.loads(payload)
    except BaseException as exc:
        return False, _unpicklable(task_name, exc)
    for held in inputs:
        if not held[0]:  # pragma: no cover - the engine never passes a failed upstream
            return False, held[1]
    if inputs:
        kwargs = _put_inputs(kwargs, [held[1] for held in inputs])
    return _call(task, kwargs, env, policy, task_name)


def report_held(
    held: tuple[bool, Any], policy: FilePolicy | None, threshold: int, task_name: str
) -> bytes | tuple[str, int, str | None]:
    """What the driver hears of a held attempt: the outcome itself when it is small,
    else ``("held", size, saved file or None)``: the value stays on the worker, and
    with autosave the worker itself writes it to the state folder."""
    ok, value = held
    if not ok:
        return value
    from dask.sizeof import sizeof

    size = sizeof(value)
    if size < threshold:
        return _dump_value(value, None, task_name)
    path = None
    if policy is not None:
        try:
            path = write_file(value, policy).path
        except Exception as exc:
            msg = (
                f"task {task_name!r} returned a large result that could not be saved to "
                f"{policy.folder} ({type(exc).__name__}: {_safe_str(exc)})"
            )
            return _serialization_error(task_name, msg, "result")
    return ("held", size, path)


def _put_inputs(kwargs: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    def put(v: Any) -> Any:
        if type(v) is Input:
            return values[v.index]
        if type(v) is list and any(type(x) is Input for x in v):
            return [values[x.index] if type(x) is Input else x for x in v]
        return v

    return map_inputs(kwargs, put)


def _pack_error(task_name: str, exc: BaseException, tb: str) -> bytes:
    problem = None
    try:
        text = str(exc)
    except Exception as str_exc:
        text = "<unprintable>"
        problem = f"its __str__ raised {type(str_exc).__name__}"
    if problem is None:
        try:
            data = cloudpickle.dumps(("error", exc, tb), protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)
            return data
        except Exception as pickle_exc:
            problem = f"it cannot be pickled ({type(pickle_exc).__name__}: {_safe_str(pickle_exc)})"
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    msg = (
        f"task {task_name!r} raised {kind}: {text}; the exception cannot travel back from "
        f"the worker because {problem}. The worker's traceback is attached; make the "
        "exception class picklable (keep its __init__ arguments in self.args)"
    )
    replacement = RemoteTaskError(msg, task=task_name, original_type=kind)
    return cloudpickle.dumps(("error", replacement, tb), protocol=pickle.HIGHEST_PROTOCOL)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"
