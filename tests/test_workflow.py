"""Parameter binding, the block, run options and results."""

from __future__ import annotations

import json

import pytest

from flowforge import (
    DAG,
    RunStatus,
    Task,
    TaskContext,
    TaskState,
    Workflow,
    WorkflowDefinitionError,
    WorkflowFailedError,
    task,
    workflow,
)
from flowforge.dsl import task as dsl_task
from flowforge.dsl import workflow as dsl_workflow


def test_issue_example_runs(opts):
    """The DSL example from the docs runs and returns results by name."""
    with workflow("etl", executor="thread", max_workers=2, **opts) as wf:

        @task
        def extract():
            return [1, 2, 3]

        @task(retries=3, retry_delay=0.5, backoff=2.0, timeout=30)
        def transform(extract):
            return [x * 2 for x in extract]

        @task(depends_on=["transform"])
        def notify():
            return "sent"

        @task
        def load(transform, ctx):
            ctx.log.info("loading", rows=len(transform))
            return len(transform)

    result = wf.run()
    assert result.ok and result["load"] == 3 and result.status == "succeeded"
    assert result.tasks["load"].state is TaskState.SUCCEEDED
    assert wf.dag.topological_order().index("transform") < wf.dag.topological_order().index(
        "notify"
    )


def test_binding_order_ctx_task_param_default(opts):
    """ctx, then task names, then params, then defaults, in that order."""
    with workflow("w", params={"a": "param-a", "n": 5}, **opts) as wf:

        @task
        def a():
            return "task-a"

        @task
        def b(a, n, ctx: TaskContext, z=7):
            return (a, n, ctx.task, z)

    assert wf.run()["b"] == ("task-a", 5, "b", 7)


def test_run_params_override_workflow_params(opts):
    """wf.run(params=) overrides workflow(params=)."""
    with workflow("w", params={"n": 1}, **opts) as wf:

        @task
        def show(n):
            return n

    assert wf.run(params={"n": 2})["show"] == 2


def test_unbound_parameter_message(opts):
    """An unbound parameter names task and parameter and how to fix it."""
    with workflow("w", **opts) as wf:

        @task
        def load(rows):
            return rows

    with pytest.raises(WorkflowDefinitionError) as info:
        wf.run()
    assert str(info.value) == (
        "task 'load' has parameter 'rows' that matches no task, param or default; add a task "
        "named 'rows', pass params={'rows': ...}, or give it a default"
    )
    assert (info.value.task, info.value.parameter) == ("load", "rows")


def test_cycle_found_when_block_exits(opts):
    """A cycle through parameter names is reported when the block exits."""
    with pytest.raises(WorkflowDefinitionError, match="cycle"):
        with workflow("w", **opts):

            @task
            def a(b):
                return 1

            @task
            def b(a):
                return 2


def test_old_spelling_inside_block(opts):
    """Dependencies set by hand through wf.dag, run inside the block, are honoured."""
    order = []
    with dsl_workflow("w", executor="sequential", **opts) as wf:

        @dsl_task
        def step2():
            order.append(2)

        @dsl_task
        def step1():
            order.append(1)

        wf.dag.get_task("step2").add_dependency(wf.dag.get_task("step1"))
        result = wf.run()
    assert result.ok and order == [1, 2]


def test_classic_api_subclass_receives_inputs(opts):
    """A Task subclass overriding run(**inputs) gets upstream results by name."""

    class Sum(Task):
        def run(self, **inputs):
            return sum(inputs.values())

    dag = DAG()
    dag.add_task(Task("one", lambda: 1))
    dag.add_task(Task("two", lambda: 2))
    dag.add_task(Sum("total", depends_on=["one", "two"]))
    wf = Workflow("classic", dag=dag, executor="sequential", **opts)
    assert wf.run()["total"] == 3


def test_unknown_executor_suggests():
    """A misspelt executor is rejected when the workflow is made."""
    with pytest.raises(ValueError, match="did you mean 'process'"):
        Workflow("w", executor="proces")


def test_bad_on_error_rejected():
    """on_error accepts only the two policies."""
    with pytest.raises(WorkflowDefinitionError, match="on_error"):
        Workflow("w", on_error="ignore")


def test_raise_for_status_carries_first_error(opts):
    """raise_for_status raises WorkflowFailedError caused by the task error."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def boom():
            raise ValueError("bad row")

    result = wf.run()
    assert result.status == RunStatus.FAILED and not result.ok
    with pytest.raises(WorkflowFailedError, match="boom") as info:
        result.raise_for_status()
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(KeyError, match="ended failed"):
        result["boom"]


def test_metrics_to_dict_is_json(opts):
    """result.metrics counts states and retries and serialises to JSON."""
    calls = []
    with workflow("w", executor="sequential", **opts) as wf:

        @task(retries=1)
        def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise OSError("once")
            return 1

        @task
        def after(flaky):
            return flaky

    m = wf.run().metrics
    assert (m.succeeded, m.failed, m.retries) == (2, 0, 1)
    assert m.tasks["flaky"].attempts == 2
    json.dumps(m.to_dict())


def test_log_file_lines_are_json_with_fields(tmp_path):
    """workflow.log has one JSON object per line with the documented fields."""
    with workflow("w", executor="sequential", log_dir=str(tmp_path), quiet=True) as wf:

        @task
        def a(ctx):
            ctx.log.info("hello", n=1)
            return 1

    result = wf.run()
    lines = [json.loads(x) for x in (tmp_path / "workflow.log").read_text().splitlines()]
    names = [x["event"] for x in lines]
    assert names == ["workflow_started", "task_started", "hello", "task_succeeded",
                     "workflow_finished"]
    done = lines[3]
    assert {"timestamp", "level", "workflow", "run_id", "task", "attempt", "duration"} <= set(done)
    assert lines[2]["task"] == "a" and lines[2]["run_id"] == result.run_id and lines[2]["n"] == 1


def test_log_dir_none_and_quiet_write_nothing(tmp_path, capsys):
    """log_dir=None writes no file; quiet=True prints nothing; autosave=False saves nothing."""
    with workflow("w", executor="sequential", log_dir=None, quiet=True, autosave=False) as wf:

        @task
        def a():
            return 1

    assert wf.run().ok
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")


def test_console_lines_when_not_quiet(capsys):
    """Without quiet, concise lines go to stderr, and no progress bar off a TTY."""
    with workflow("w", executor="sequential", log_dir=None) as wf:

        @task
        def a():
            return 1

    wf.run()
    err = capsys.readouterr().err
    assert "a succeeded" in err and "run " in err and "[#" not in err
