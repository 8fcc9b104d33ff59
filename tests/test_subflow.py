"""Subflows: a workflow used as one task of another, plain or mapped, and resumed with it."""

from __future__ import annotations

import os

import pytest

from flowforge import WorkflowFailedError, task, workflow
from flowforge.events import TaskSucceeded
from flowforge.testing import RecordingListener


def make_ingest(calls, opts):
    with workflow("ingest", **opts) as ingest:

        @task
        def read(path, prefix="row"):
            calls.append(f"read {path}")
            if path == "bad.csv" and not os.path.exists("go"):
                raise RuntimeError(f"cannot read {path}")
            return [f"{prefix}:{path}"]

        @task
        def count(read):
            calls.append("count")
            return len(read)

    return ingest


def test_add_subflow_runs_it_as_one_task_and_names_its_events(opts):
    """add_subflow: the result is the dict of the subflow's results; upstream results
    arrive as params; its tasks' events reach the parent as ingest.<task>."""
    calls = []
    ingest = make_ingest(calls, opts)
    with workflow("main", executor="thread", **opts) as wf:

        @task
        def path():
            return "a.csv"

        wf.add_subflow(ingest, name="ingest", params={"prefix": "line"}, depends_on=["path"])

        @task
        def report(ingest):
            return ingest["count"]

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok, result.error
    assert result["ingest"] == {"read": ["line:a.csv"], "count": 1}
    assert result["report"] == 1
    names = [e.task for e in rec.of_type(TaskSucceeded)]
    assert {"ingest.read", "ingest.count", "ingest"} <= set(names)
    assert all(e.workflow == "main" and e.run_id == result.run_id
               for e in rec.of_type(TaskSucceeded))


def test_mapped_subflow_sends_each_item_through_the_whole_subflow(opts):
    """as_task(map=...) inside a block: one nested run per item, results as a list."""
    calls = []
    ingest = make_ingest(calls, opts)
    with workflow("main", executor="thread", max_workers=2, **opts) as wf:

        @task
        def path():
            return ["a.csv", "b.csv", "c.csv"]

        ingest.as_task(name="each", map="path")

    result = wf.run()
    assert result.ok
    assert [r["read"] for r in result["each"]] == [["row:a.csv"], ["row:b.csv"], ["row:c.csv"]]
    assert sorted(c for c in calls if c.startswith("read")) == [
        "read a.csv", "read b.csv", "read c.csv"
    ]


def test_a_failing_subflow_fails_its_task_with_the_nested_error(opts):
    """The subflow task fails with WorkflowFailedError; its cause is the nested task's."""
    calls = []
    ingest = make_ingest(calls, opts)
    with workflow("main", **opts) as wf:

        @task
        def path():
            return "bad.csv"

        wf.add_subflow(ingest, name="ingest", depends_on=["path"])

    result = wf.run()
    error = result.tasks["ingest"].error
    assert isinstance(error, WorkflowFailedError)
    assert isinstance(error.__cause__, RuntimeError) and "bad.csv" in str(error.__cause__)


@pytest.mark.parametrize("mapped", [False, True])
def test_subflow_resumes_as_part_of_its_parent(opts, mapped):
    """After a failure inside a subflow, resuming the parent reruns only the nested tasks
    (and items) that had not finished."""
    calls = []
    ingest = make_ingest(calls, opts)
    with workflow("main", **opts) as wf:

        @task
        def path():
            return ["ok.csv", "bad.csv"] if mapped else "bad.csv"

        if mapped:
            ingest.as_task(name="ingest", map="path")
        else:
            wf.add_subflow(ingest, name="ingest", depends_on=["path"])

    assert wf.run().status == "failed"
    open("go", "w").close()
    calls.clear()
    result = wf.run()
    assert result.ok and result.resumed
    assert calls == ["read bad.csv", "count"]  # neither ok.csv nor path ran again


def test_changing_a_subflow_task_invalidates_the_saved_subflow_result(opts):
    """The subflow task's fingerprint covers its inner tasks: edit one, it runs again."""
    def build():
        with workflow("inner", **opts) as inner:

            @task
            def value():
                return 1

        with workflow("outer", **opts) as outer:
            outer.add_subflow(inner, name="inner")

            @task
            def after(inner):
                if not os.path.exists("go"):
                    raise RuntimeError("not yet")
                return inner["value"]

        return outer

    build().run()
    assert build().plan()["inner"].action == "restore"
    code = compile("def f():\n    return 2\n", "x", "exec")
    ns: dict = {}
    exec(code, ns)
    with workflow("inner", **opts) as inner2:
        task(name="value")(ns["f"])
    with workflow("outer", **opts) as outer2:
        outer2.add_subflow(inner2, name="inner")

        @task
        def after(inner):
            return inner["value"]

    assert outer2.plan()["inner"].reason == "code or options changed"


def test_a_subflow_two_levels_down_follows_the_outermost_run(opts, tmp_path):
    """An inner subflow saves into the outermost run's state folder and its events reach
    the outermost bus."""
    with workflow("grand", **opts) as grand:

        @task
        def g():
            return 1

    with workflow("child", **opts) as child:
        grand.as_task(name="gsub")
    with workflow("top", state_dir=str(tmp_path / "top_state"), **opts) as top:
        child.as_task(name="csub")
    rec = RecordingListener.attach_to(top)
    result = top.run()
    assert result.ok and result["csub"] == {"gsub": {"g": 1}}
    assert "csub.gsub.g" in [e.task for e in rec.of_type(TaskSucceeded)]
    assert (tmp_path / "top_state" / "top.csub.gsub").is_dir()
    assert not (tmp_path / "state").exists()


def test_a_timed_out_subflow_attempt_can_be_retried(opts):
    """The nested run stops before the subflow task's timeout, so a retry is not locked
    out by it."""
    import time as _time

    with workflow("slow", **opts) as slow:

        @task
        def nap(ctx):
            if not os.path.exists("once"):
                open("once", "w").close()
                _time.sleep(3)
            return "rested"

    with workflow("main", **opts) as wf:
        slow.as_task(name="slow", timeout=1.0, retries=1)

    result = wf.run()
    assert result.ok, result.error
    assert result["slow"] == {"nap": "rested"} and result.tasks["slow"].attempts == 2
