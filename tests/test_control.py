"""Control flow at run time: conditions, branches, trigger rules, tolerated failures and
failure hooks, on every executor."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge import TaskError, WorkflowDefinitionError, branch, task, workflow
from flowforge.events import TaskFailed

EXECUTORS = ["sequential", "thread", "process"]


@pytest.fixture(params=EXECUTORS)
def executor(request):
    return request.param


def states(result):
    return {n: t.state.value for n, t in result.tasks.items()}


def skip_reasons(wf):
    from flowforge.events import TaskSkipped
    from flowforge.testing import RecordingListener

    return RecordingListener.attach_to(wf), TaskSkipped


# -- conditions ---------------------------------------------------------------------------


def test_false_condition_skips_the_task_and_the_skip_spreads(opts, executor):
    """when= false: SKIPPED with "condition false"; all_success downstream is skipped too;
    the run still succeeds."""
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def check():
            return {"quality": 0.5}

        @task(when=lambda check: check["quality"] > 0.8)
        def high(check):
            return "high"

        @task(when=lambda check: check["quality"] <= 0.8)
        def low(check):
            return "low"

        @task
        def after_high(high):
            return high

    rec, TaskSkipped = skip_reasons(wf)
    result = wf.run()
    assert result.ok
    assert states(result) == {"check": "succeeded", "high": "skipped", "low": "succeeded",
                              "after_high": "skipped"}
    reasons = {e.task: e.reason for e in rec.of_type(TaskSkipped)}
    assert reasons == {"high": "condition false", "after_high": "upstream task 'high' was skipped"}
    assert dict(result.results) == {"check": {"quality": 0.5}, "low": "low"}


def test_condition_binds_params_and_ctx_and_adds_its_upstreams(opts):
    """A condition takes params and ctx like a task, and a task it reads becomes an upstream."""
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def gate():
            return True

        @task(when=lambda gate, limit, ctx: gate and limit > 1 and ctx.task == "work")
        def work():
            return "done"

    assert wf.dag.upstream("work") == ("gate",) or list(wf.dag.upstream("work")) == ["gate"]
    assert wf.run(params={"limit": 2})["work"] == "done"
    assert wf.run(params={"limit": 0}, fresh=True).tasks["work"].state == "skipped"


def test_condition_with_an_unknown_parameter_is_a_definition_error(opts):
    """An unbound condition parameter is named before anything runs."""
    with pytest.raises(WorkflowDefinitionError, match=r"the condition \(when=\) of task 'b' "
                       r"has parameter 'nope'"):
        with workflow("w", executor="sequential", **opts) as wf:

            @task(when=lambda nope: True)
            def b():
                return 1

        wf.run()


def test_a_condition_that_raises_fails_its_task(opts, executor):
    """The condition's exception is the task's failure, not retried."""
    def boom():
        raise ValueError("bad condition")

    with workflow("w", executor=executor, **opts) as wf:

        @task(when=boom, retries=3)
        def a():
            return 1

    result = wf.run()
    assert result.status == "failed"
    assert isinstance(result.tasks["a"].error, ValueError) and result.tasks["a"].attempts == 1


# -- branches -----------------------------------------------------------------------------


def _routed(executor, opts, choice, *, decorator=branch):
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @task
        def score():
            return choice

        @decorator
        def route(score):
            return score

        @task(depends_on=["route"])
        def publish():
            return "published"

        @task(depends_on=["route"])
        def review():
            return "reviewed"

        @task(trigger="none_failed")
        def report(publish, review):
            return [publish, review]

    return wf


def test_branch_runs_the_chosen_task_and_skips_the_others(opts, executor):
    """A branch's result names the downstream task to run; the rest are skipped."""
    wf = _routed(executor, opts, "publish")
    rec, TaskSkipped = skip_reasons(wf)
    result = wf.run()
    assert result.ok
    assert result.tasks["review"].state == "skipped" and result["publish"] == "published"
    assert [(e.task, e.reason) for e in rec.of_type(TaskSkipped)] == [
        ("review", "not chosen by route")
    ]
    assert result["report"] == ["published", None]  # a skipped upstream hands over None


@pytest.mark.parametrize(
    ("choice", "ran"),
    [(["publish", "review"], {"publish", "review"}), (None, set()), ("review", {"review"})],
)
def test_branch_may_choose_several_or_none(opts, choice, ran):
    """A list chooses several downstream tasks, None chooses none; @task.branch works too."""
    result = _routed("sequential", opts, choice, decorator=task.branch).run()
    assert result.ok
    assert {n for n in ("publish", "review") if result.tasks[n].state == "succeeded"} == ran


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("publsh", "branch 'route' chose 'publsh', which is not one of its direct downstream"),
        (42, "branch 'route' returned 42 (int)"),
    ],
)
def test_branch_choosing_something_else_fails_clearly(opts, choice, message):
    """Naming a task that is not a direct downstream (or not a name) fails the branch."""
    result = _routed("sequential", opts, choice).run()
    assert result.status == "failed"
    error = result.tasks["route"].error
    assert isinstance(error, TaskError) and message in str(error)
    assert "'publish', 'review'" in str(error)


def test_resumed_run_keeps_a_restored_branch_choice(opts):
    """A branch restored from a saved run still skips the tasks it did not choose."""
    calls = []
    with workflow("w", executor="sequential", **opts) as wf:

        @branch
        def route():
            calls.append("route")
            return "review"

        @task(depends_on=["route"])
        def publish():
            calls.append("publish")

        @task(depends_on=["route"])
        def review():
            calls.append("review")
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return "ok"

    assert wf.run().status == "failed"
    open("go", "w").close()
    result = wf.run()
    assert result.ok and result.resumed
    assert calls == ["route", "review", "review"]
    assert result.tasks["publish"].state == "skipped"


# -- triggers and tolerated failures ----------------------------------------------------


def test_tolerated_failure_does_not_fail_the_run_and_one_failed_is_the_error_path(opts, executor):
    """on_error="continue" on a task: the run succeeds; one_failed downstream runs (getting
    None for the failed input); all_success downstream is skipped."""
    with workflow("w", executor=executor, **opts) as wf:

        @task(on_error="continue")
        def fetch():
            raise ConnectionError("offline")

        @task
        def parse(fetch):
            return fetch

        @task(trigger="one_failed")
        def alert(fetch):
            return f"alert: fetch gave {fetch}"

        @task(trigger="all_done")
        def cleanup(parse, alert):
            return "clean"

    result = wf.run()
    assert result.ok, result.error
    assert states(result) == {"fetch": "failed", "parse": "skipped", "alert": "succeeded",
                              "cleanup": "succeeded"}
    assert result.tasks["fetch"].tolerated
    assert result["alert"] == "alert: fetch gave None"
    result.raise_for_status()


def test_task_fail_fast_stops_a_continue_workflow(opts):
    """A task's own on_error="fail_fast" stops the run even under on_error="continue"."""
    with workflow("w", executor="sequential", on_error="continue", **opts) as wf:

        @task(on_error="fail_fast")
        def a():
            raise RuntimeError("stop everything")

        @task
        def b():
            return 1

    result = wf.run()
    assert result.status == "failed" and result.tasks["b"].state == "cancelled"


def test_bad_control_options_are_definition_errors():
    """Unknown triggers, non-callable conditions and hooks are named with the fix."""
    with pytest.raises(WorkflowDefinitionError, match="trigger must be one of all_success"):
        task(trigger="always")(lambda: 1)
    with pytest.raises(WorkflowDefinitionError, match="when= must be a callable"):
        task(when=True)(lambda: 1)
    with pytest.raises(WorkflowDefinitionError, match="on_error must be 'continue'"):
        task(on_error="ignore")(lambda: 1)
    with pytest.raises(WorkflowDefinitionError, match="on_failure must be a callable"):
        task(on_failure="mail")(lambda: 1)


# -- failure hooks ------------------------------------------------------------------------


def test_task_on_failure_gets_the_final_failure_once(opts, executor, caplog):
    """on_failure runs in the driver once, after the last retry, with the TaskFailed event;
    a hook that raises is logged and changes nothing."""
    seen = []

    def hook(event):
        seen.append((event.task, event.attempt, type(event.error).__name__, os.getpid()))
        raise RuntimeError("the hook itself broke")

    with workflow("w", executor=executor, **opts) as wf:

        @task(retries=1, on_failure=hook)
        def a():
            raise KeyError("k")

    with caplog.at_level(logging.ERROR, logger="flowforge"):
        result = wf.run()
    assert result.status == "failed" and isinstance(result.tasks["a"].error, KeyError)
    assert seen == [("a", 2, "KeyError", os.getpid())]
    assert "on_failure of task 'a' raised" in caplog.text
    assert isinstance(TaskFailed, type)


def test_workflow_on_failure_is_called_once_with_the_result(opts, caplog):
    """@wf.on_failure handlers get the RunResult of a failed run, never of a good one."""
    calls = []
    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a(fail):
            if fail:
                raise RuntimeError("no")

    @wf.on_failure
    def notify(result):
        calls.append((result.status.value, result.tasks["a"].state.value))

    @wf.on_failure
    def broken(result):
        raise RuntimeError("pager is down")

    with caplog.at_level(logging.ERROR, logger="flowforge"):
        assert wf.run(params={"fail": True}).status == "failed"
        assert wf.run(params={"fail": False}, fresh=True).ok
    assert calls == [("failed", "failed")]
    assert "pager is down" in caplog.text


# -- property: triggers are honoured on every executor ------------------------------------

TRIGGERS = ["all_success", "all_done", "one_success", "one_failed", "all_failed", "none_failed"]


def _expected_runs(trigger, ups):
    """An independent statement of each trigger rule over upstream end states."""
    if not ups:
        return True
    ok = [s == "succeeded" for s in ups]
    bad = [s == "failed" for s in ups]
    return {
        "all_success": all(ok),
        "all_done": True,
        "one_success": any(ok),
        "one_failed": any(bad),
        "all_failed": all(bad),
        "none_failed": not any(bad),
    }[trigger]


@st.composite
def control_dags(draw):
    n = draw(st.integers(2, 9))
    nodes = []
    for i in range(n):
        ups = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        nodes.append({
            "ups": [f"t{u}" for u in ups],
            "trigger": draw(st.sampled_from(TRIGGERS)),
            "outcome": draw(st.sampled_from(["ok", "ok", "fail", "false", "branch"])),
        })
    for i, node in enumerate(nodes):  # a branch chooses some of its direct downstream
        downstream = [f"t{j}" for j, other in enumerate(nodes) if f"t{i}" in other["ups"]]
        node["chooses"] = (
            sorted(draw(st.sets(st.sampled_from(downstream)))) if downstream else []
        )
    return nodes


def _build(nodes, executor, opts):
    with workflow("p", executor=executor, max_workers=2, autosave=False, **opts) as wf:
        for i, node in enumerate(nodes):
            outcome = node["outcome"]

            def body(_i=i, _outcome=outcome, _chooses=tuple(node.get("chooses", ())),
                     **inputs):
                if _outcome == "fail":
                    raise RuntimeError(f"t{_i} fails")
                if _outcome == "branch":
                    return list(_chooses)
                return [_i, sorted((k, v) for k, v in inputs.items())]

            from flowforge import Task

            wf.add_task(Task(
                f"t{i}", body, depends_on=node["ups"], trigger=node["trigger"],
                on_error="continue", branch=outcome == "branch",
                when=(lambda: False) if outcome == "false" else None,
            ))
    return wf


@settings(max_examples=40, deadline=None)
@given(control_dags())
def test_random_conditions_branches_and_triggers_match_the_rules(nodes):
    """No task runs unless its trigger holds over its upstreams' end states and every
    branch above it that ran chose it; a task whose condition is false is skipped;
    sequential and thread runs agree exactly."""
    opts = {"log_dir": None, "quiet": True, "progress": False}
    expected = {}
    for i, node in enumerate(nodes):
        ups = [expected[u] for u in node["ups"]]
        passed_over = any(
            nodes[int(u[1:])]["outcome"] == "branch" and expected[u] == "succeeded"
            and f"t{i}" not in nodes[int(u[1:])]["chooses"]
            for u in node["ups"]
        )
        if passed_over or not _expected_runs(node["trigger"], ups) or node["outcome"] == "false":
            expected[f"t{i}"] = "skipped"
        else:
            expected[f"t{i}"] = "failed" if node["outcome"] == "fail" else "succeeded"
    runs = [_build(nodes, ex, opts).run() for ex in ("sequential", "thread")]
    for result in runs:
        assert states(result) == expected
        assert result.ok  # every failure is tolerated
    assert dict(runs[0].results) == dict(runs[1].results)


def test_random_control_flow_on_the_process_executor_matches(opts):
    """One mixed DAG gives the same states and results on the process executor."""
    nodes = [
        {"ups": [], "trigger": "all_success", "outcome": "ok"},
        {"ups": [], "trigger": "all_success", "outcome": "fail"},
        {"ups": ["t0", "t1"], "trigger": "one_success", "outcome": "ok"},
        {"ups": ["t1"], "trigger": "all_failed", "outcome": "ok"},
        {"ups": ["t0"], "trigger": "all_success", "outcome": "false"},
        {"ups": ["t4", "t2"], "trigger": "none_failed", "outcome": "ok"},
        {"ups": ["t4"], "trigger": "all_success", "outcome": "ok"},
        {"ups": ["t2"], "trigger": "all_success", "outcome": "branch", "chooses": ["t8"]},
        {"ups": ["t7"], "trigger": "all_success", "outcome": "ok"},
        {"ups": ["t7"], "trigger": "all_done", "outcome": "ok"},
    ]
    results = [_build(nodes, ex, {**opts}).run() for ex in ("sequential", "process")]
    assert states(results[0]) == states(results[1]) == {
        "t0": "succeeded", "t1": "failed", "t2": "succeeded", "t3": "succeeded",
        "t4": "skipped", "t5": "succeeded", "t6": "skipped", "t7": "succeeded",
        "t8": "succeeded", "t9": "skipped",
    }
    assert dict(results[0].results) == dict(results[1].results)
