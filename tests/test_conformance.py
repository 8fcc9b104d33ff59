"""One conformance suite, run against every executor: sequential, thread, process, and
Dask on a LocalCluster (the way CPython's ``create_executor_tests`` and dask's
``GetFunctionTestMixin`` run one body of tests per executor).

Each test pins one behaviour the engine promises whatever runs the attempts: binding,
retries and backoff, timeouts, fail_fast and continue, skip propagation, map, loop and
branch, resume after a SIGKILL, Ctrl-C, and pickling errors. Tasks keep cross-process
state in files under ``tmp_path`` (see :mod:`tests.fixture_conformance`); a task that
must outlive its welcome waits on a gate file that the test opens at the end, so nothing
abandoned (a thread, a Dask worker's attempt) runs on after the test.

The Dask cluster is started once per module and given to each test by address, so
FlowForge leaves it running between tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from flowforge import (
    Loop,
    TaskSerializationError,
    TaskState,
    TaskTimeoutError,
    WorkflowTimeoutError,
    branch,
    task,
    workflow,
)
from flowforge.events import TaskFailed, TaskRetrying, TaskSkipped
from flowforge.testing import FakeClock, RecordingListener
from tests import fixture_conformance as fx
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
EXECUTORS = ["sequential", "thread", "process", "dask"]
#: What a test waits for at most before it fails (a subprocess, a file, a run).
DEADLINE = 60.0


@pytest.fixture(scope="module")
def dask_address():
    """One LocalCluster of two worker processes for the module, given by address."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc:
        yield lc.scheduler_address


@pytest.fixture(params=EXECUTORS)
def executor(request):
    """What ``workflow(executor=...)`` takes: a name, or a fresh DaskExecutor per test."""
    if request.param != "dask":
        yield request.param
        return
    from flowforge import DaskExecutor

    ex = DaskExecutor(address=request.getfixturevalue("dask_address"))
    yield ex
    ex.shutdown()


def kind(executor) -> str:
    return executor if isinstance(executor, str) else "dask"


def isolated(executor) -> bool:
    """True where attempts cross a process boundary (so they are pickled)."""
    return kind(executor) in ("process", "dask")


def states(result) -> dict[str, str]:
    return {n: t.state.value for n, t in result.tasks.items()}


def reasons(rec) -> dict[str, str]:
    return {e.task: e.reason for e in rec.of_type(TaskSkipped)}


# -- binding ---------------------------------------------------------------------------


def test_binding(executor, opts):
    """Parameters bind to upstream results by name, then params (workflow and run), then
    defaults; ctx carries run_id, workflow, task, attempt, params and inputs."""
    with workflow("bind", executor=executor, max_workers=2, params={"scale": 3},
                  **opts) as wf:

        @task
        def base():
            return 2

        @task
        def scaled(base, scale, offset=10):
            return base * scale + offset

        @task
        def info(scaled, ctx):
            return (ctx.run_id, ctx.workflow, ctx.task, ctx.attempt, dict(ctx.params),
                    ctx.get_input("scaled"), sorted(ctx.inputs))

    result = wf.run()
    assert result.ok, result.error
    assert result["scaled"] == 16
    assert result["info"] == (result.run_id, "bind", "info", 1, {"scale": 3}, 16, ["scaled"])

    again = wf.run(params={"scale": 5, "offset": 0}, fresh=True)
    assert again.ok, again.error
    assert again["scaled"] == 10  # run params beat workflow params and defaults
    assert again["info"][4] == {"scale": 5, "offset": 0}


# -- retries ---------------------------------------------------------------------------


def test_retries_and_backoff(executor, opts, tmp_path):
    """Attempt k+1 waits retry_delay*backoff**(k-1) on the injected clock; every attempt
    is counted; an error outside retry_on is not retried."""
    flaky_log, picky_log = str(tmp_path / "flaky"), str(tmp_path / "picky")
    clock = FakeClock()
    with workflow("retry", executor=executor, max_workers=2, clock=clock,
                  on_error="continue", **opts) as wf:

        @task(retries=3, retry_delay=1.0, backoff=2.0, retry_on=ConnectionError)
        def flaky():
            if fx.bump(flaky_log) < 4:
                raise ConnectionError("down")
            return "up"

        @task(retries=3, retry_delay=1.0, retry_on=ConnectionError)
        def picky():
            fx.bump(picky_log)
            raise ValueError("not transient")

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result["flaky"] == "up"
    assert result.tasks["flaky"].attempts == 4 and fx.count(flaky_log) == 4
    assert [e.delay for e in rec.for_task("flaky") if isinstance(e, TaskRetrying)] == [
        1.0, 2.0, 4.0]
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert result.tasks["picky"].state is TaskState.FAILED
    assert isinstance(result.tasks["picky"].error, ValueError)
    assert result.tasks["picky"].attempts == 1 and fx.count(picky_log) == 1
    assert [e.will_retry for e in rec.for_task("picky") if isinstance(e, TaskFailed)] == [False]


# -- timeouts --------------------------------------------------------------------------


def test_timeout(executor, opts, tmp_path):
    """An attempt past timeout= fails with TaskTimeoutError at once (killed in a process,
    abandoned elsewhere); under continue its downstream is skipped and the rest runs."""
    gate = str(tmp_path / "gate")
    with workflow("timeout", executor=executor, max_workers=2, on_error="continue",
                  **opts) as wf:

        @task(timeout=0.5)
        def sleepy():
            fx.hold(gate, 30)
            return "woke"

        @task
        def after(sleepy):
            return sleepy

        @task
        def fine():
            return "fine"

    t0 = time.monotonic()
    try:
        result = wf.run()
        elapsed = time.monotonic() - t0
    finally:
        fx.touch(gate)  # an abandoned attempt ends now
    assert elapsed < 20, f"the run waited {elapsed:.1f}s for a 0.5s timeout"
    assert result.status == "failed"
    err = result.tasks["sleepy"].error
    assert isinstance(err, TaskTimeoutError), repr(err)
    how = "killed" if kind(executor) == "process" else "abandoned"
    assert "task 'sleepy' attempt 1 timed out after 0.5s" in str(err) and how in str(err)
    assert states(result) == {"sleepy": "failed", "after": "skipped", "fine": "succeeded"}


def test_run_timeout(executor, opts, tmp_path):
    """workflow(timeout=) stops a long attempt when the run's time is up, on every
    executor (the sequential one too: its attempt then runs on a thread of its own), and
    the run fails with WorkflowTimeoutError; what never started ends CANCELLED, saying
    so."""
    gate = str(tmp_path / "gate")
    with workflow("run-timeout", executor=executor, timeout=0.5, **opts) as wf:

        @task
        def sleepy():
            fx.hold(gate, 30)
            return "woke"

        @task
        def after(sleepy):
            return sleepy

    t0 = time.monotonic()
    try:
        result = wf.run()
        elapsed = time.monotonic() - t0
    finally:
        fx.touch(gate)  # an abandoned attempt ends now
    assert elapsed < 20, f"the run waited {elapsed:.1f}s for a 0.5s run timeout"
    assert isinstance(result.error, WorkflowTimeoutError), repr(result.error)
    assert result.status == "failed"
    assert states(result) == {"sleepy": "cancelled", "after": "cancelled"}
    assert result.tasks["after"].reason.startswith("never started: the workflow timeout")
    assert result.tasks["after"].attempts == 0


# -- failure policies ------------------------------------------------------------------


def test_fail_fast_cancels_what_never_started(executor, opts, tmp_path):
    """fail_fast: after a failure nothing new starts; tasks not started end CANCELLED
    with the reason (no task is left pending) and the run fails with the task's error."""
    seen = str(tmp_path / "a-failed")
    ran_c = str(tmp_path / "c-ran")
    with workflow("ff", executor=executor, max_workers=2, **opts) as wf:

        @task
        def a():
            raise RuntimeError("boom")

        @task
        def b(a):
            return a

        @task
        def slow():  # independent; may be running when a fails, and then it finishes
            fx.hold(seen, 30)
            return 1

        @task
        def c(slow):
            fx.bump(ran_c)
            return slow

    # The driver marks a's final failure; by then the run has stopped starting tasks.
    wf.events.subscribe(
        TaskFailed, lambda e: fx.touch(seen) if e.task == "a" and not e.will_retry else None
    )
    try:
        result = wf.run()
    finally:
        fx.touch(seen)
    assert result.status == "failed"
    assert isinstance(result.tasks["a"].error, RuntimeError)
    assert result.tasks["b"].state is TaskState.CANCELLED
    assert result.tasks["c"].state is TaskState.CANCELLED
    assert result.tasks["c"].reason == "never started: task 'a' failed (fail_fast)"
    assert fx.count(ran_c) == 0
    # sequential runs tasks one by one, a first: slow never started
    expected_slow = (TaskState.CANCELLED if kind(executor) == "sequential"
                     else TaskState.SUCCEEDED)
    assert result.tasks["slow"].state is expected_slow
    m = result.metrics
    assert m.succeeded + m.failed + m.cancelled + m.skipped == len(result.tasks)


def test_continue_skips_only_downstream(executor, opts):
    """continue: the failed task's downstream is SKIPPED naming the cause; independent
    tasks run; the run ends failed."""
    with workflow("cont", executor=executor, max_workers=2, on_error="continue",
                  **opts) as wf:

        @task
        def a():
            raise RuntimeError("boom")

        @task
        def b(a):
            return a

        @task
        def c(b):
            return b

        @task
        def d():
            return "d"

        @task
        def e(d):
            return d + "e"

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.status == "failed"
    assert states(result) == {"a": "failed", "b": "skipped", "c": "skipped",
                              "d": "succeeded", "e": "succeeded"}
    assert result["e"] == "de"
    assert reasons(rec) == {"b": "upstream task 'a' failed", "c": "upstream task 'b' was skipped"}


# -- skips and triggers ----------------------------------------------------------------


def test_skip_propagation_and_triggers(executor, opts):
    """when= false skips a task; the skip spreads through all_success but stops at
    all_done and none_failed (which get None); after a failure none_failed skips."""
    with workflow("skip", executor=executor, max_workers=2, on_error="continue",
                  **opts) as wf:

        @task
        def src():
            return 1

        @task(when=lambda src: src > 5)
        def gated(src):
            return "gated"

        @task
        def spread(gated):
            return gated

        @task(trigger="all_done")
        def done(gated):
            return ("done", gated)

        @task(trigger="none_failed")
        def nofail(gated):
            return ("nofail", gated)

        @task
        def broken():
            raise RuntimeError("broken")

        @task(trigger="none_failed")
        def nofail_after_broken(broken):
            return "never"

        @task(trigger="all_done")
        def done_after_broken(broken):
            return ("done", broken)

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert states(result) == {
        "src": "succeeded", "gated": "skipped", "spread": "skipped", "done": "succeeded",
        "nofail": "succeeded", "broken": "failed", "nofail_after_broken": "skipped",
        "done_after_broken": "succeeded",
    }
    assert result["done"] == ("done", None) and result["nofail"] == ("nofail", None)
    assert result["done_after_broken"] == ("done", None)
    assert reasons(rec) == {
        "gated": "condition false",
        "spread": "upstream task 'gated' was skipped",
        "nofail_after_broken": "trigger 'none_failed' not met (broken failed)",
    }


# -- map, loop, branch -----------------------------------------------------------------


def test_map(executor, opts, tmp_path):
    """map= runs one attempt per item and hands the list on in input order; an empty
    list maps to []."""
    items_log = str(tmp_path / "items")
    with workflow("map", executor=executor, max_workers=2, **opts) as wf:

        @task
        def numbers():
            return [5, 1, 4, 2, 3]

        @task
        def nothing():
            return []

        @task(map="numbers")
        def square(numbers, ctx):
            fx.bump(items_log)
            return (ctx.map_index, numbers * numbers)

        @task(map="nothing")
        def twice(nothing):
            return nothing * 2

        @task
        def total(square, twice):
            return sum(v for _, v in square) + len(twice)

    result = wf.run()
    assert result.ok, result.error
    assert result["square"] == [(0, 25), (1, 1), (2, 16), (3, 4), (4, 9)]
    assert result["twice"] == []
    assert result["total"] == 55
    assert fx.count(items_log) == 5  # each item ran once


def test_loop(executor, opts, tmp_path):
    """loop= repeats a task until its condition holds, each iteration seeing the last
    result; max_iterations caps it (on_exhausted="succeed" keeps the last result)."""
    until_log, capped_log = str(tmp_path / "until"), str(tmp_path / "capped")
    with workflow("loop", executor=executor, max_workers=2, **opts) as wf:

        @task(loop=Loop(max_iterations=10, until=lambda r: r >= 3))
        def count(ctx):
            fx.bump(until_log)
            return (ctx.previous or 0) + 1

        @task(loop=Loop(max_iterations=2, until=lambda r: False, on_exhausted="succeed"))
        def capped(ctx):
            fx.bump(capped_log)
            return ctx.iteration

    result = wf.run()
    assert result.ok, result.error
    assert result["count"] == 3 and fx.count(until_log) == 3
    assert result["capped"] == 1 and fx.count(capped_log) == 2


def test_branch(executor, opts, tmp_path):
    """A branch's result names the downstream task that runs; the others are skipped and
    never start."""
    review_log = str(tmp_path / "review")
    with workflow("branch", executor=executor, max_workers=2, **opts) as wf:

        @task
        def score():
            return 0.9

        @branch
        def route(score):
            return "publish" if score > 0.5 else "review"

        @task(depends_on=["route"])
        def publish():
            return "published"

        @task(depends_on=["route"])
        def review():
            fx.bump(review_log)
            return "reviewed"

        @task(trigger="none_failed")
        def report(publish, review):
            return [publish, review]

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok, result.error
    assert result["route"] == "publish" and result["publish"] == "published"
    assert result.tasks["review"].state is TaskState.SKIPPED
    assert reasons(rec) == {"review": "not chosen by route"}
    assert result["report"] == ["published", None]
    assert fx.count(review_log) == 0


# -- a driver in a subprocess: SIGKILL and Ctrl-C --------------------------------------


class Driver:
    """``python -m tests.fixture_conformance MODE TMP EXECUTOR [ADDRESS]`` in the
    background, its output kept in ``TMP/MODE.out``."""

    def __init__(self, mode: str, tmp: Path, executor) -> None:
        self.out = tmp / f"{mode}.out"
        args = [sys.executable, "-m", "tests.fixture_conformance", mode, str(tmp),
                kind(executor)]
        if kind(executor) == "dask":
            args.append(executor.address)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-4000:]

    def wait_for(self, path: Path, what: str) -> None:
        """Wait until ``path`` exists; fail (with the driver's output) if it exits first."""
        wait_until(lambda: path.exists() or self.proc.poll() is not None, DEADLINE, what)
        assert self.proc.poll() is None, (
            f"the driver exited with {self.proc.returncode} before {what}:\n{self.output()}"
        )

    def stop(self) -> None:
        """Kill the driver if it still runs, and whatever processes it started."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            try:
                child.kill()
            except psutil.Error:
                pass


def test_resume_after_kill(executor, opts, tmp_path):
    """A run SIGKILLed while a task blocks resumes when run again: the task that had
    finished is restored, not run again, and the run succeeds."""
    driver = Driver("kill", tmp_path, executor)
    try:
        driver.wait_for(tmp_path / "blocking", "task 'block' to start")
        os.kill(driver.proc.pid, signal.SIGKILL)
        code = driver.proc.wait(timeout=DEADLINE)
        assert code == -signal.SIGKILL, f"not killed mid-run ({code}):\n{driver.output()}"
    finally:
        fx.touch(str(tmp_path / "gate"))  # an attempt left on a Dask worker ends now
        driver.stop()
    assert (tmp_path / "first").read_text() == "ran\n"

    result = fx.build_kill(str(tmp_path), executor).run()
    assert result.ok, result.error
    assert result.resumed
    assert result.tasks["first"].restored and result.tasks["first"].state is TaskState.SUCCEEDED
    assert not result.tasks["block"].restored
    assert result["block"] == 42
    assert (tmp_path / "first").read_text() == "ran\n"  # not run again


def test_ctrl_c_cancels(executor, tmp_path):
    """A real SIGINT while a long task runs: run() returns promptly with status
    cancelled, the long task CANCELLED, the one waiting on it never started, and the
    script exits 0 without a traceback."""
    driver = Driver("cancel", tmp_path, executor)
    try:
        driver.wait_for(tmp_path / "started", "task 'long' to start")
        t0 = time.monotonic()
        os.kill(driver.proc.pid, signal.SIGINT)
        try:
            code = driver.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not stop within 30s of SIGINT:\n{driver.output()}")
        elapsed = time.monotonic() - t0
    finally:
        fx.touch(str(tmp_path / "gate"))  # an attempt left on a Dask worker ends now
        driver.stop()
    out = driver.output()
    assert code == 0, f"exit code {code}:\n{out}"
    assert "status cancelled long cancelled after " in out, out
    # The task waiting on the cancelled one never started: CANCELLED too (a resume runs it).
    assert out.split("after ")[-1].split()[0] == "cancelled", out
    assert "Traceback" not in out, out
    assert elapsed < 15, f"SIGINT took {elapsed:.1f}s to stop the run"


# -- async tasks -----------------------------------------------------------------------


def test_async_tasks(executor, opts, tmp_path):
    """``async def`` tasks are awaited: their results bind downstream, a retry awaits a
    new coroutine, a timeout fails the attempt with TaskTimeoutError (cancelling the
    coroutine where the attempt is not killed), and a plain task that returns an
    un-awaited coroutine fails naming the task."""
    import asyncio

    flaky_log, cancelled = str(tmp_path / "flaky"), str(tmp_path / "cancelled")
    with workflow("async", executor=executor, max_workers=2, on_error="continue",
                  **opts) as wf:

        @task
        async def fetch():
            await asyncio.sleep(0.01)
            return 21

        @task(retries=1)
        async def doubled(fetch):
            if fx.bump(flaky_log) == 1:
                raise ConnectionError("once")
            await asyncio.sleep(0)
            return fetch * 2

        @task(timeout=0.5)
        async def slow():
            try:
                await asyncio.sleep(30)
            finally:
                fx.touch(cancelled)

        @task
        def forgot():
            return fx.answer()

    result = wf.run()
    assert result["doubled"] == 42 and result.tasks["doubled"].attempts == 2
    err = result.tasks["slow"].error
    assert isinstance(err, TaskTimeoutError), repr(err)
    if kind(executor) != "process":  # a process worker may be killed first
        assert wait_until(lambda: os.path.exists(cancelled), DEADLINE, "the coroutine's finally")
    forgot = result.tasks["forgot"].error
    assert "task 'forgot' returned a coroutine it never awaited" in str(forgot), repr(forgot)
    assert states(result)["forgot"] == "failed"


# -- pickling --------------------------------------------------------------------------


def test_pickling_errors(executor, opts):
    """Where attempts cross a process boundary, an unpicklable closure variable or input
    fails its task at once with TaskSerializationError naming it; in-process executors
    run the same workflow."""
    lock = threading.Lock()
    with workflow("pickle", executor=executor, max_workers=2, on_error="continue",
                  autosave=False, **opts) as wf:

        @task(retries=2)
        def uses_lock():
            with lock:
                return "locked"

        @task(retries=2)
        def takes(handle):
            return type(handle).__name__

        @task
        def plain():
            return "plain"

    result = wf.run(params={"handle": threading.RLock()})
    assert result["plain"] == "plain"
    if not isolated(executor):
        assert result.ok, result.error
        assert result["uses_lock"] == "locked" and result["takes"] == "RLock"
        return
    assert result.status == "failed"
    for name, culprit in (("uses_lock", "closure variable 'lock'"), ("takes", "input 'handle'")):
        run = result.tasks[name]
        assert isinstance(run.error, TaskSerializationError), repr(run.error)
        assert f"task {name!r}" in str(run.error) and culprit in str(run.error)
        assert run.attempts == 1  # not retried: it would fail the same way
