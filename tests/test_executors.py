"""One conformance suite for every executor, then what only the process executor does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

from flowforge import (
    RemoteTaskError,
    Task,
    TaskSerializationError,
    TaskState,
    TaskTimeoutError,
    WorkerCrashedError,
    Workflow,
    task,
    workflow,
)
from flowforge.executors import ProcessExecutor, SequentialExecutor, ThreadExecutor
from tests import fixture_tasks

EXECUTORS = ["sequential", "thread", "process"]


@pytest.mark.parametrize("executor", EXECUTORS)
class TestConformance:
    """Behaviour every executor must share."""

    def test_results_flow_downstream(self, executor, opts):
        """Each task gets its upstream results by parameter name."""
        with workflow("w", executor=executor, max_workers=2, **opts) as wf:

            @task
            def x():
                return 1

            @task
            def y(x):
                return x + 1

            @task
            def z(x, y):
                return x + y

        result = wf.run()
        assert result.ok and result.results == {"x": 1, "y": 2, "z": 3}

    def test_error_is_reported_on_the_task(self, executor, opts):
        """A task's exception arrives as its error with the original type."""
        with workflow("w", executor=executor, max_workers=2, **opts) as wf:

            @task
            def bad():
                raise KeyError("missing column")

        result = wf.run()
        assert isinstance(result.tasks["bad"].error, KeyError)

    def test_retry_then_success(self, executor, opts, tmp_path):
        """A failed attempt is retried and counted (state kept in a file, across processes)."""
        marker = str(tmp_path / "attempts")
        with workflow("w", executor=executor, max_workers=2, **opts) as wf:

            @task(retries=2)
            def flaky():
                with open(marker, "a") as f:
                    f.write("x")
                if len(open(marker).read()) < 2:
                    raise OSError("transient")
                return "ok"

        result = wf.run()
        assert result.ok and result.tasks["flaky"].attempts == 2

    def test_ctx_fields(self, executor, opts):
        """ctx carries run_id, workflow, task, attempt, params and inputs."""
        with workflow("w", executor=executor, params={"p": 9}, **opts) as wf:

            @task
            def a():
                return 5

            @task
            def b(a, ctx):
                return (ctx.workflow, ctx.task, ctx.attempt, ctx.params["p"], ctx.get_input("a"))

        result = wf.run()
        assert result["b"] == ("w", "b", 1, 9, 5)

    def test_lambda_and_closure_tasks(self, executor, opts):
        """Lambdas and closures run on every executor."""
        k = 41
        wf = Workflow("w", executor=executor, **opts)
        wf.add_task(Task("lam", lambda: k + 1))
        wf.add_task(Task("clo", lambda lam: lam * 2))
        assert wf.run().results == {"lam": 42, "clo": 84}

    def test_module_level_tasks(self, executor, opts):
        """Tasks from an importable module run (pickled by reference on processes)."""
        wf = Workflow("w", executor=executor, params={"x": 1}, **opts)
        wf.add_task(fixture_tasks.add_one)
        assert wf.run()["add_one"] == 2


def test_executor_instances_accepted(opts):
    """Executor instances are accepted in workflow() and run()."""
    with workflow("w", executor=ThreadExecutor(max_workers=1), **opts) as wf:

        @task
        def a():
            return 1

    assert wf.run().ok
    assert wf.run(executor=SequentialExecutor()).ok
    assert wf.run(executor=ProcessExecutor(max_workers=1)).ok


def test_per_task_executor_override(opts):
    """@task(executor=...) runs that task elsewhere."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task(executor="process")
        def elsewhere():
            return os.getpid()

        @task
        def here():
            return os.getpid()

    result = wf.run()
    assert result["here"] == os.getpid() != result["elsewhere"]


def test_unpicklable_closure_names_the_variable(opts):
    """A closure over a lock fails at once naming the variable, without a hang."""
    lock = threading.Lock()
    with workflow("w", executor="process", **opts) as wf:

        @task(retries=3)
        def uses_lock():
            with lock:
                return 1

    result = wf.run()
    err = result.tasks["uses_lock"].error
    assert isinstance(err, TaskSerializationError)
    assert "closure variable 'lock'" in str(err) and "'uses_lock'" in str(err)
    assert result.tasks["uses_lock"].attempts == 1


def test_unpicklable_result_is_named(opts):
    """A result that cannot be pickled fails with the task and the type named."""
    with workflow("w", executor="process", **opts) as wf:

        @task
        def gives_lock():
            return threading.Lock()

    err = wf.run().tasks["gives_lock"].error
    assert isinstance(err, TaskSerializationError) and "lock" in str(err)


@pytest.mark.parametrize(
    "fn", [fixture_tasks.raise_unpicklable, fixture_tasks.raise_bad_str,
           fixture_tasks.raise_needs_two]
)
def test_exceptions_that_cannot_travel(fn, opts):
    """Unpicklable, unprintable or un-unpicklable errors become RemoteTaskError; the
    worker survives and the next task runs on it."""
    wf = Workflow("w", executor=ProcessExecutor(max_workers=1), on_error="continue", **opts)
    wf.add_task(Task("bad", fn))
    wf.add_task(Task("pid1", fixture_tasks.pid, depends_on=["bad"]))
    wf.add_task(Task("pid2", fixture_tasks.pid))
    result = wf.run()
    err = result.tasks["bad"].error
    assert isinstance(err, RemoteTaskError), err
    assert "'bad'" in str(err)
    assert err.__cause__ is not None  # the worker's traceback
    assert result.tasks["pid2"].state is TaskState.SUCCEEDED


def test_worker_traceback_is_the_cause(opts):
    """A worker's exception carries the worker's formatted traceback as __cause__."""
    with workflow("w", executor="process", **opts) as wf:

        @task
        def bad():
            raise ValueError("deep inside")

    err = wf.run().tasks["bad"].error
    assert isinstance(err, ValueError)
    assert "deep inside" in str(err.__cause__) and "Traceback" in str(err.__cause__)


def test_worker_crash_fails_only_that_task(opts):
    """os._exit in a worker fails that task with the exit code; others succeed, and a
    retry gets a fresh worker."""
    wf = Workflow("w", executor="process", max_workers=2, on_error="continue", **opts)
    wf.add_task(Task("crash", fixture_tasks.crash, retries=1))
    for i in range(4):
        wf.add_task(Task(f"ok{i}", fixture_tasks.pid))
    result = wf.run()
    err = result.tasks["crash"].error
    assert isinstance(err, WorkerCrashedError) and err.exitcode == 3
    assert "exited with code 3" in str(err)
    assert result.tasks["crash"].attempts == 2
    assert all(result.tasks[f"ok{i}"].state is TaskState.SUCCEEDED for i in range(4))
    assert all(result.tasks[f"ok{i}"].attempts == 1 for i in range(4))


def test_process_timeout_kills_worker(opts):
    """A process task past its timeout is killed: TaskTimeoutError, run goes on."""
    import time as _time

    with workflow("w", executor="process", max_workers=1, on_error="continue", **opts) as wf:

        @task(timeout=0.5)
        def sleepy():
            _time.sleep(30)

        @task
        def after():
            return os.getpid()

    t0 = _time.monotonic()
    result = wf.run()
    assert _time.monotonic() - t0 < 15
    err = result.tasks["sleepy"].error
    assert isinstance(err, TaskTimeoutError) and "killed" in str(err)
    assert result.tasks["after"].state is TaskState.SUCCEEDED


def _two_pids(executor, opts):
    """Two independent tasks, a and b, that return the pid of the process they ran in."""
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def a():
            return os.getpid()

        @task
        def b():
            return os.getpid()

    return wf


def test_no_worker_left_after_run(opts):
    """When run() returns, no worker process of the run is alive."""
    wf = _two_pids("process", opts)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = wf.run()
    assert result.ok
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE} - before
    assert not ({result["a"], result["b"]} & left)


def test_started_workers_run_the_first_attempts_and_stop_with_the_run(opts):
    """ProcessExecutor.start() boots the workers before the run; its attempts then run
    in those very workers, and none is left once run() returns."""
    ex = ProcessExecutor(max_workers=2)
    ex.start()
    booted = {slot._process.pid for slot in ex._slots}
    assert len(booted) == 2 and all(psutil.pid_exists(pid) for pid in booted)
    result = _two_pids(ex, opts).run()
    assert result.ok, result.error
    assert {result["a"], result["b"]} <= booted
    for pid in booted:
        with pytest.raises(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(pid)


def test_workers_hide_their_start_up_objects_from_the_collector(opts):
    """A worker freezes what its start-up made (gc.freeze): its collections, and its exit
    that run() waits for, no longer walk loky's and cloudpickle's objects. Garbage its
    tasks make is still collected."""
    with workflow("w", executor="process", max_workers=1, **opts) as wf:

        @task
        def probe():
            import gc
            import weakref

            class Node:
                pass

            node = Node()
            node.me = node  # a cycle only the collector can free
            gone = weakref.ref(node)
            del node
            gc.collect()
            return gc.get_freeze_count(), gone() is None

    result = wf.run()
    assert result.ok, result.error
    frozen, collected = result["probe"]
    assert frozen > 10_000
    assert collected


MAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from flowforge import workflow, task

    with workflow("main", executor="process", max_workers=2, log_dir=None, quiet=True) as wf:
        @task
        def a():
            return 20

        @task
        def b(a):
            return a + 22

    result = wf.run()
    print(result.status, result["b"])
    """
)


def test_tasks_defined_in_main(tmp_path):
    """Tasks defined in a script's `with` block run on the process executor."""
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "succeeded 42"


def test_thread_pool_replaces_an_abandoned_thread():
    """After its only thread is abandoned, a one-thread pool still runs new work."""
    ex = ThreadExecutor(max_workers=1)
    release = threading.Event()
    stuck = ex.submit(release.wait, 10)
    while not ex._running:  # wait until the thread has really taken the job
        threading.Event().wait(0.001)
    assert ex.cancel_running(stuck) is False
    assert ex.submit(lambda: 42).result(timeout=5) == 42
    release.set()
    ex.shutdown()


def test_process_cancel_of_queued_work_never_runs_it(tmp_path):
    """Work cancelled while queued in the process executor is never started."""
    ex = ProcessExecutor(max_workers=1)
    first = ex.submit(fixture_tasks.pid)
    queued = ex.submit(fixture_tasks.crash, 5)
    assert ex.cancel_running(queued) is True
    first.result(timeout=60)
    assert queued.cancelled()
    assert isinstance(ex.submit(fixture_tasks.pid).result(timeout=60), int)
    ex.shutdown()


def test_each_executor_says_what_it_can_do_with_protocols_not_flags():
    """Abilities beyond submit/shutdown are Protocols the engine checks with isinstance;
    the capability flags of the last release are gone."""
    from flowforge.executors.base import (
        Batching,
        InProcess,
        SharesResults,
        TakesAttempts,
        WorkerProcesses,
    )

    seq, thr, proc = SequentialExecutor(), ThreadExecutor(2), ProcessExecutor(2)
    assert isinstance(seq, InProcess) and isinstance(thr, InProcess)
    assert not isinstance(proc, InProcess)
    for ability in (TakesAttempts, Batching, WorkerProcesses, SharesResults):
        assert isinstance(proc, ability) and not isinstance(thr, ability)
    assert seq.may_run_here(alone=False) and not thr.may_run_here(alone=False)
    assert thr.may_run_here(alone=True)
    for flag in ("inline", "isolated", "takes_tasks", "batching", "holds_results"):
        assert not hasattr(proc, flag) and not hasattr(seq, flag)


def test_a_concurrent_futures_executor_runs_a_workflow_with_pickled_attempts(opts):
    """Any object with submit/shutdown works: it is adapted, and since the engine cannot
    know where it runs work, each attempt reaches it pickled (closures included)."""
    from concurrent.futures import ThreadPoolExecutor

    k = 20
    with workflow("w", executor=ThreadPoolExecutor(max_workers=2), **opts) as wf:

        @task
        def a():
            return k + 1

        @task
        def b(a):
            return a * 2

    result = wf.run()
    assert result.ok and result["b"] == 42


def test_an_object_without_submit_is_refused_with_the_choices():
    """An executor that is neither a name nor an object with submit/shutdown is an error
    naming what would do."""
    with pytest.raises(TypeError, match="executor must be 'sequential', 'thread', 'process'"):
        Workflow("w", executor=object())
