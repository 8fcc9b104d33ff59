"""map= and loop=: dynamic fan-out over a result, repetition until a condition holds, on
every executor, and resuming in the middle of either after a failure or a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from flowforge import Loop, TaskError, WorkflowDefinitionError, task, workflow
from flowforge.events import TaskSucceeded
from flowforge.persistence import PersistenceManager
from flowforge.testing import RecordingListener

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTORS = ["sequential", "thread", "process"]


@pytest.fixture(params=EXECUTORS)
def executor(request):
    return request.param


# -- map ----------------------------------------------------------------------------------


def test_map_runs_each_item_and_returns_the_list_in_input_order(opts, executor):
    """One attempt per item, results in input order, ctx.map_index per item; the downstream
    task gets the list; each item reports its own events."""
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def files():
            return ["a.csv", "b.csv", "c.csv"]

        @task(map="files")
        def parse(files, ctx):
            return f"{files.upper()}@{ctx.map_index}"

        @task
        def count(parse):
            return len(parse)

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok
    assert result["parse"] == ["A.CSV@0", "B.CSV@1", "C.CSV@2"] and result["count"] == 3
    items = sorted(e.index for e in rec.of_type(TaskSucceeded) if e.task == "parse" and
                   e.index is not None)
    assert items == [0, 1, 2]


def test_empty_map_gives_an_empty_list(opts, executor):
    """Mapping over nothing is not an error: the result is []."""
    with workflow("w", executor=executor, **opts) as wf:

        @task
        def nothing():
            return []

        @task(map="nothing")
        def each(nothing):
            raise AssertionError("never called")

    assert wf.run()["each"] == []


def test_lockstep_map_over_two_upstreams(opts):
    """map=[a, b] pairs the i-th items of both; different lengths fail clearly."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def xs(n):
            return list(range(n))

        @task
        def ys():
            return [10, 20, 30]

        @task(map=["xs", "ys"])
        def add(xs, ys):
            return xs + ys

    assert wf.run(params={"n": 3})["add"] == [10, 21, 32]
    bad = wf.run(params={"n": 2}, fresh=True)
    assert bad.status == "failed"
    assert "their lengths differ (xs: 2, ys: 3)" in str(bad.tasks["add"].error)


def test_map_over_something_not_iterable_fails_the_task(opts):
    """A mapped upstream that returned a non-iterable is named with its value."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def n():
            return 3

        @task(map="n")
        def each(n):
            return n

    result = wf.run()
    error = result.tasks["each"].error
    assert isinstance(error, TaskError)
    assert "task 'each' maps over 'n', whose result is 3 (int), not a list" in str(error)


def test_each_item_has_its_own_retries_and_a_final_failure_names_the_item(opts, executor):
    """An item that fails is retried on its own; one that keeps failing fails the task,
    with a note saying which item."""
    marks = os.path.abspath("marks")
    os.mkdir(marks)
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def items():
            return [0, 1, 2, 3]

        @task(map="items", retries=1)
        def flaky(items, ctx):
            path = os.path.join(marks, f"{items}-{ctx.attempt}")
            open(path, "w").close()
            if items == 1 and ctx.attempt == 1:
                raise RuntimeError("first try of item 1")
            if items == 3:
                raise ValueError("item 3 always fails")
            return items

    result = wf.run()
    assert result.status == "failed"
    error = result.tasks["flaky"].error
    assert isinstance(error, ValueError)
    assert "(in item 3 of task 'flaky')" in getattr(error, "__notes__", [])
    made = set(os.listdir(marks))
    assert {"1-1", "3-1", "3-2"} <= made  # item 3 was retried before it failed the task


def test_a_retried_item_that_passes_keeps_the_map_going(opts, executor):
    """An item's failure is retried on its own; the others are not run again."""
    marks = os.path.abspath("marks")
    os.mkdir(marks)
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def items():
            return [0, 1, 2]

        @task(map="items", retries=2)
        def flaky(items, ctx):
            open(os.path.join(marks, f"{items}-{ctx.attempt}"), "w").close()
            if items == 1 and ctx.attempt < 3:
                raise RuntimeError("not yet")
            return items * 10

    result = wf.run()
    assert result.ok and result["flaky"] == [0, 10, 20]
    assert set(os.listdir(marks)) == {"0-1", "1-1", "1-2", "1-3", "2-1"}


def test_mapped_parameter_must_exist():
    """map= naming an upstream the function does not take is a definition error."""
    with pytest.raises(WorkflowDefinitionError, match="maps over 'files' but has no parameter"):
        with workflow("w", executor="sequential", log_dir=None) as wf:

            @task
            def files():
                return [1]

            @task(map="files")
            def each(item):
                return item

        wf.validate()


def test_map_and_loop_options_are_checked():
    """Bad map=/loop= values and map with loop are definition errors naming the fix."""
    with pytest.raises(WorkflowDefinitionError, match="map= takes the name of an upstream"):
        task(map=3)(lambda: 1)
    with pytest.raises(WorkflowDefinitionError, match="cannot be combined with loop="):
        task(map="x", loop=Loop(max_iterations=2))(lambda x: 1)
    with pytest.raises(WorkflowDefinitionError, match="max_iterations"):
        Loop(max_iterations=0)
    with pytest.raises(WorkflowDefinitionError, match="on_exhausted"):
        Loop(max_iterations=2, on_exhausted="maybe")


# -- loop ---------------------------------------------------------------------------------


def test_loop_repeats_until_the_condition_holds(opts, executor):
    """ctx.iteration counts from 0, ctx.previous is the last result; the task's result is
    the last iteration's."""
    with workflow("w", executor=executor, **opts) as wf:

        @task(loop=Loop(max_iterations=10, until=lambda r: r["accuracy"] > 0.935))
        def train(ctx):
            before = None if ctx.previous is None else ctx.previous["accuracy"]
            return {"accuracy": 0.90 + 0.01 * ctx.iteration, "before": before,
                    "i": ctx.iteration}

    result = wf.run()
    assert result.ok
    assert result["train"]["i"] == 4 and result["train"]["before"] == pytest.approx(0.93)


@pytest.mark.parametrize(("on_exhausted", "status"), [("fail", "failed"), ("succeed", "succeeded")])
def test_exhausted_loop_fails_or_keeps_the_last_result(opts, on_exhausted, status):
    """When max_iterations run out: fail with a message, or succeed with the last result."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task(loop=Loop(max_iterations=3, until=lambda r: False, on_exhausted=on_exhausted))
        def never(ctx):
            return ctx.iteration

    result = wf.run()
    assert result.status == status
    if status == "failed":
        assert "ran 3 iterations and its until= condition never held" in str(
            result.tasks["never"].error
        )
    else:
        assert result["never"] == 2


def test_loop_without_until_runs_exactly_max_iterations(opts):
    """No until=: the task runs max_iterations times and keeps the last result."""
    seen = []
    with workflow("w", executor="sequential", **opts) as wf:

        @task(loop=Loop(max_iterations=4))
        def step(ctx):
            seen.append(ctx.iteration)
            return ctx.iteration * 10

    assert wf.run()["step"] == 30 and seen == [0, 1, 2, 3]


# -- resume ---------------------------------------------------------------------------


def test_resume_after_a_failed_item_runs_only_unfinished_items(opts):
    """Items saved before a failure are not run again; the resumed map completes."""
    calls = []
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def items():
            return list(range(6))

        @task(map="items")
        def work(items):
            calls.append(items)
            if items == 3 and not os.path.exists("go"):
                raise RuntimeError("item 3 not yet")
            return items * items

        @task
        def total(work):
            return sum(work)

    assert wf.run().status == "failed"
    assert calls == [0, 1, 2, 3]
    open("go", "w").close()
    calls.clear()
    result = wf.run()
    assert result.ok and result.resumed and calls == [3, 4, 5]
    assert result["work"] == [0, 1, 4, 9, 16, 25] and result["total"] == 55
    saved = PersistenceManager("state").load(result.run_id)
    assert saved.results["work"] == [0, 1, 4, 9, 16, 25]


_KILLED = """
import os, signal, sys
from flowforge import Loop, task, workflow
log = open("calls.log", "a")
def note(text):
    log.write(text + "\\n"); log.flush()
with workflow("k", executor=sys.argv[1], max_workers=2, quiet=True, progress=False) as wf:
    @task
    def items():
        return list(range(8))
    @task(map="items")
    def work(items):
        note(f"work {items}")
        if items == 5 and not os.path.exists("go"):
            os.kill(os.getpid(), signal.SIGKILL)
        note(f"done {items}")
        return items * 2
    @task(loop=Loop(max_iterations=6))
    def grow(work, ctx):
        note(f"grow {ctx.iteration} {ctx.previous}")
        if ctx.iteration == 3 and not os.path.exists("go2"):
            os.kill(os.getpid(), signal.SIGKILL)
        return (ctx.previous or 0) + sum(work)
r = wf.run()
print(r.status, r.resumed, r["work"], r["grow"])
"""


@pytest.mark.parametrize("executor", ["sequential", "thread"])
def test_kill_9_in_the_middle_of_a_map_and_of_a_loop_resumes_where_it_stopped(executor):
    """SIGKILL inside a map item, then inside a loop iteration: each rerun starts only
    the items and iterations that had not finished."""
    env = {**os.environ, "PYTHONPATH": REPO}

    def run():
        return subprocess.run([sys.executable, "-c", _KILLED, executor], env=env,
                              capture_output=True, text=True, timeout=60)

    def calls():
        with open("calls.log") as f:
            lines = f.read().splitlines()
        os.unlink("calls.log")
        return lines

    first = run()
    assert first.returncode == -signal.SIGKILL, first.stderr
    done = {int(line.split()[1]) for line in calls() if line.startswith("done")}
    open("go", "w").close()
    second = run()
    assert second.returncode == -signal.SIGKILL, second.stderr  # now killed in the loop
    again = {int(line.split()[1]) for line in calls() if line.startswith("work")}
    assert 5 in again
    # an item done but not yet saved when the kill came may run again: at most the one
    # other worker's (max_workers=2); everything else saved is restored
    assert len(again & done) <= (1 if executor == "thread" else 0)
    assert again | done == set(range(8))
    open("go2", "w").close()
    third = run()
    assert third.returncode == 0, third.stderr
    lines = calls()
    assert lines == ["grow 3 " + str(3 * sum(2 * i for i in range(8)))] + [
        f"grow {i} {i * 56}" for i in (4, 5)
    ]
    assert third.stdout.split(maxsplit=2)[:2] == ["succeeded", "True"]
    assert third.stdout.strip().endswith("336")


def test_items_saved_from_older_upstream_results_are_never_reused(opts):
    """Items saved before an upstream ran again (with other results) are not restored,
    even when that upstream is itself restored in a later resume."""
    fail = {12}
    with workflow("w", executor="thread", max_workers=1, **opts) as wf:

        @task
        def src(v):
            return [v * 10 + i for i in range(3)]

        @task(map="src")
        def m(src):
            if src in fail:
                raise RuntimeError(f"item {src} fails")
            return src

    assert wf.run(params={"v": 1}).status == "failed"  # saves items 10 and 11
    fail.clear()
    fail.add(20)
    assert wf.run(params={"v": 2}).status == "failed"  # src runs again: [20, 21, 22]
    fail.clear()
    result = wf.run(params={"v": 2})  # src restored; the old items must not come back
    assert result.ok and result["m"] == [20, 21, 22]


def test_a_map_item_that_cannot_be_pickled_keeps_the_result_and_reruns_on_resume(opts):
    """An unsaved item leaves the mapped task unsaved: its list stays in memory for this
    run, and a resume computes the task again instead of failing to load it."""
    import threading

    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def src():
            return [1, 2]

        @task(map="src")
        def m(src):
            return threading.Lock() if src == 1 else src

        @task
        def d(m):
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return len(m)

    first = wf.run()
    assert first.status == "failed" and len(first["m"]) == 2
    plan = wf.plan()
    assert plan["m"].action == "run" and "item 0 could not be saved" in plan["m"].reason
    open("go", "w").close()
    assert wf.run()["d"] == 2


def test_a_stopped_run_leaves_no_mapped_task_running(opts):
    """When the run stops with items still queued, the mapped task ends cancelled."""
    with workflow("w", executor="thread", max_workers=1, **opts) as wf:

        @task
        def src():
            return list(range(5))

        @task(map="src")
        def m(src):
            if src == 1:
                raise RuntimeError("stop the run")
            return src

    result = wf.run()
    assert result.status == "failed"
    assert result.tasks["m"].state in ("failed", "cancelled")
    assert all(t.state != "running" for t in result.tasks.values())
