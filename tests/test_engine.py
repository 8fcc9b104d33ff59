"""The scheduling loop: retries, timeouts, failure policies, events, cancellation."""

from __future__ import annotations

import threading

import pytest

from flowforge import (
    TaskState,
    TaskTimeoutError,
    WorkflowTimeoutError,
    task,
    workflow,
)
from flowforge.events import (
    Event,
    TaskFailed,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    WorkflowFinished,
    WorkflowStarted,
)
from flowforge.testing import FakeClock, RecordingListener, run_in_process


@pytest.mark.parametrize("executor", ["sequential", "thread"])
def test_retries_use_backoff_on_the_injected_clock(executor, opts):
    """Delays follow retry_delay*backoff**(k-1) capped by max_delay, on the fake clock."""
    clock = FakeClock()
    calls = []
    with workflow("w", executor=executor, clock=clock, **opts) as wf:

        @task(retries=4, retry_delay=1.0, backoff=2.0, max_delay=5.0)
        def flaky():
            calls.append(1)
            if len(calls) < 5:
                raise ConnectionError("down")
            return "up"

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok and result.tasks["flaky"].attempts == 5
    assert [e.delay for e in rec.of_type(TaskRetrying)] == [1.0, 2.0, 4.0, 5.0]
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0]
    assert [e.will_retry for e in rec.of_type(TaskFailed)] == [True] * 4


def test_retry_on_limits_what_is_retried(opts):
    """An error outside retry_on fails at once."""
    with workflow("w", executor="sequential", clock=FakeClock(), **opts) as wf:

        @task(retries=3, retry_on=(ConnectionError,))
        def bad():
            raise ValueError("not transient")

    result = wf.run()
    assert result.tasks["bad"].attempts == 1 and result.tasks["bad"].state is TaskState.FAILED


def test_fail_fast_cancels_the_rest(opts):
    """fail_fast: no task starts after a failure; the rest end CANCELLED, never started."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a():
            raise RuntimeError("x")

        @task
        def b(a):
            return 1

        @task
        def c():
            return 2

    result = wf.run()
    assert result.status == "failed"
    assert result.tasks["b"].state is TaskState.CANCELLED
    assert result.tasks["c"].state is TaskState.CANCELLED
    assert result.tasks["c"].attempts == 0 and result.tasks["c"].started is None


def test_continue_skips_downstream_only(opts):
    """continue: downstream of a failure is SKIPPED, independent branches run."""
    with workflow("w", executor="thread", on_error="continue", **opts) as wf:

        @task
        def a():
            raise RuntimeError("x")

        @task
        def b(a):
            return 1

        @task
        def c(b):
            return 1

        @task
        def d():
            return 2

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    states = {n: t.state for n, t in result.tasks.items()}
    assert states == {"a": TaskState.FAILED, "b": TaskState.SKIPPED, "c": TaskState.SKIPPED,
                      "d": TaskState.SUCCEEDED}
    assert {e.task for e in rec.of_type(TaskSkipped)} == {"b", "c"}


def test_events_in_causal_order(opts):
    """Started before succeeded, and an upstream finishes before its downstream starts."""
    with workflow("w", executor="thread", **opts) as wf:

        @task
        def a():
            return 1

        @task
        def b(a):
            return 2

    rec = RecordingListener.attach_to(wf)
    wf.run()
    names = [(type(e).__name__, getattr(e, "task", None)) for e in rec.events]
    assert names == [
        ("WorkflowStarted", None),
        ("TaskStarted", "a"),
        ("TaskSucceeded", "a"),
        ("TaskStarted", "b"),
        ("TaskSucceeded", "b"),
        ("WorkflowFinished", None),
    ]
    assert all(e.run_id == rec.events[0].run_id for e in rec.events)


def test_failing_handler_never_breaks_the_run(opts, caplog):
    """A handler that raises is logged and the run succeeds."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a():
            return 1

    def bad(event):
        raise RuntimeError("listener bug")

    wf.events.subscribe(Event, bad)
    assert wf.run().ok
    assert "listener bug" in caplog.text


def test_unsubscribe_stops_delivery(opts):
    """The function subscribe returns removes the handler."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a():
            return 1

    seen = []
    off = wf.events.subscribe(TaskStarted, seen.append)
    wf.run()
    off()
    wf.run()
    assert len(seen) == 1


def test_subscribe_rejects_strings():
    """Subscriptions are by type, never by string."""
    from flowforge.bus import EventBus

    with pytest.raises(TypeError, match="Event class"):
        EventBus().subscribe("task_failed", print)  # type: ignore[arg-type]


@pytest.mark.parametrize("executor", ["sequential", "thread"])
def test_thread_timeout_abandons_attempt(executor, opts):
    """A stuck task on in-process executors times out and the run goes on."""
    release = threading.Event()
    with workflow("w", executor=executor, on_error="continue", **opts) as wf:

        @task(timeout=0.2)
        def stuck():
            release.wait(10)

        @task
        def fine():
            return 1

    result = wf.run()
    release.set()
    err = result.tasks["stuck"].error
    assert isinstance(err, TaskTimeoutError) and "abandoned" in str(err)
    assert result.tasks["fine"].state is TaskState.SUCCEEDED


def test_timeout_on_fake_clock(opts):
    """Timeouts read the injected clock: advancing it expires the attempt."""
    clock = FakeClock()
    release = threading.Event()
    with workflow("w", executor="thread", clock=clock, **opts) as wf:

        @task(timeout=60)
        def slow():
            clock.advance(61)
            release.wait(10)

    result = wf.run()
    release.set()
    assert isinstance(result.tasks["slow"].error, TaskTimeoutError)


def test_workflow_timeout_cancels_running(opts):
    """workflow(timeout=) ends the run as failed with WorkflowTimeoutError."""
    release = threading.Event()
    with workflow("w", executor="thread", timeout=0.2, **opts) as wf:

        @task
        def slow():
            release.wait(10)

    result = wf.run()
    release.set()
    assert result.status == "failed"
    assert isinstance(result.error, WorkflowTimeoutError)
    assert result.tasks["slow"].state is TaskState.CANCELLED
    with pytest.raises(WorkflowTimeoutError):
        result.raise_for_status()


def test_independent_tasks_run_concurrently_on_threads(opts):
    """Two independent tasks overlap on the thread executor (a barrier proves it)."""
    barrier = threading.Barrier(2, timeout=5)
    with workflow("w", executor="thread", max_workers=2, **opts) as wf:

        @task
        def a():
            barrier.wait()
            return 1

        @task
        def b():
            barrier.wait()
            return 2

    assert wf.run().ok


def test_no_level_barrier(opts):
    """A task starts when its own upstreams finish, not when its level does."""
    slow_may_finish = threading.Event()
    with workflow("w", executor="thread", max_workers=3, **opts) as wf:

        @task
        def slow():
            assert slow_may_finish.wait(5)
            return 1

        @task
        def fast():
            return 1

        @task
        def after_fast(fast):
            slow_may_finish.set()
            return 2

    assert wf.run().ok


def test_run_in_process_helper_is_quiet(capsys, tmp_path):
    """run_in_process runs sequentially with no files and no output."""
    with workflow("w") as wf:

        @task
        def a():
            return 1

    assert run_in_process(wf)["a"] == 1
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_workflow_events_have_totals(opts):
    """WorkflowStarted counts tasks; WorkflowFinished carries status and counts."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a():
            return 1

    rec = RecordingListener.attach_to(wf)
    wf.run()
    assert rec.of_type(WorkflowStarted)[0].total_tasks == 1
    fin = rec.of_type(WorkflowFinished)[0]
    assert (fin.status, fin.succeeded) == ("succeeded", 1)
    assert rec.of_type(TaskSucceeded)[0].duration >= 0


@pytest.mark.parametrize("executor", ["sequential", "thread"])
def test_system_exit_in_a_task_is_a_task_failure(executor, opts):
    """sys.exit() inside a task fails that task; it never escapes run()."""
    import sys

    with workflow("w", executor=executor, **opts) as wf:

        @task
        def a():
            sys.exit(3)

    result = wf.run()
    assert result.status == "failed"
    assert isinstance(result.tasks["a"].error.__cause__, SystemExit)  # kept as the cause


@pytest.mark.parametrize("executor", ["sequential", "thread", "process"])
def test_sys_exit_in_a_task_fails_that_task_and_says_so(executor, opts):
    """sys.exit(3) in a task fails it with TaskExitError ("the task called sys.exit(3)"),
    unretried as before (SystemExit is no Exception), and nothing exits: the run goes on
    under continue."""
    import sys

    from flowforge import TaskExitError

    with workflow("exits", executor=executor, max_workers=2, on_error="continue",
                  **opts) as wf:

        @task(retries=2)
        def quits():
            sys.exit(3)

        @task
        def other():
            return "fine"

    result = wf.run()
    error = result.tasks["quits"].error
    assert isinstance(error, TaskExitError), repr(error)
    assert "task 'quits' called sys.exit(3)" in str(error) and error.exit_code == 3
    assert result.tasks["quits"].attempts == 1
    assert result["other"] == "fine"
