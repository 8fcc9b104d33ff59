"""DAG structure, validation and the ready-set."""

from __future__ import annotations

import pytest

from flowforge import DAG, Task, Workflow, WorkflowDefinitionError, task, workflow


def _t(name, *deps):
    return Task(name, lambda **kw: name, depends_on=list(deps))


def test_topological_order_respects_dependencies():
    """Every task comes after its upstreams."""
    dag = DAG([_t("c", "b"), _t("a"), _t("b", "a")])
    assert dag.topological_order() == ["a", "b", "c"]


def test_cycle_is_reported_in_order():
    """A cycle names its tasks in order, as data and in the message."""
    dag = DAG([_t("a", "c"), _t("b", "a"), _t("c", "b"), _t("d")])
    with pytest.raises(WorkflowDefinitionError) as info:
        dag.validate()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert " -> ".join(cycle) in str(info.value)


def test_self_dependency_is_a_cycle():
    """A task depending on itself is a cycle."""
    with pytest.raises(WorkflowDefinitionError, match="cycle"):
        DAG([_t("a", "a")]).validate()


def test_unknown_dependency_suggests_close_names():
    """A dependency on a missing task names it and suggests the closest."""
    dag = DAG([_t("transform"), _t("load", "transfrom")])
    with pytest.raises(WorkflowDefinitionError, match="did you mean 'transform'"):
        dag.validate()


def test_duplicate_names_rejected():
    """Two tasks with one name are a definition error."""
    with pytest.raises(WorkflowDefinitionError, match="already has a task named 'a'"):
        DAG([_t("a"), _t("a")])


def test_duplicate_in_block_rejected():
    """Defining two tasks with the same name in a block fails at the second."""
    with pytest.raises(WorkflowDefinitionError, match="already has a task named 'f'"):
        with workflow("w"):

            @task
            def f():
                return 1

            @task(name="f")
            def g():
                return 2


def test_add_dependency_by_name_and_object():
    """add_dependency accepts names and task objects; get_task finds tasks."""
    dag = DAG([_t("a"), _t("b"), _t("c")])
    dag.add_dependency("b", "a")
    dag.get_task("c").add_dependency(dag.get_task("b"))
    assert dag.topological_order() == ["a", "b", "c"]
    assert dag.downstream("a") == ["b"]


def test_get_task_unknown_suggests():
    """get_task of a wrong name suggests a close one."""
    with pytest.raises(WorkflowDefinitionError, match="did you mean 'extract'"):
        DAG([_t("extract")]).get_task("extarct")


def test_ready_set_drop_and_done():
    """ReadySet releases tasks as upstreams finish and never releases dropped ones."""
    dag = DAG([_t("a"), _t("b", "a"), _t("c", "b"), _t("d", "a")])
    rs = dag.compile().ready_set()
    assert rs.get_ready() == ["a"]
    rs.done("a")
    assert sorted(rs.get_ready()) == ["b", "d"]
    assert rs.drop("b") == ["c"]
    rs.done("b")
    assert rs.get_ready() == []


def test_definition_errors_start_nothing(tmp_path):
    """A cycle found at run() starts no task and writes no log."""
    ran = []
    wf = Workflow("w", log_dir=str(tmp_path / "logs"), quiet=True)
    wf.add_task(Task("a", lambda: ran.append("a"), depends_on=["b"]))
    wf.add_task(Task("b", lambda: ran.append("b"), depends_on=["a"]))
    with pytest.raises(WorkflowDefinitionError, match="cycle"):
        wf.run()
    assert ran == [] and not (tmp_path / "logs").exists()


def _quiet(name="w"):
    return Workflow(name, executor="sequential", log_dir=None, quiet=True, progress=False,
                    autosave=False)


def _edit_dependency_in_place(wf):
    wf.tasks["a"].depends_on.append("c")  # the list itself: now a cycle a -> c -> a


def _replace_function(wf):
    wf.tasks["c"].fn = lambda a, b: a + b  # now reads b's result too


def _add_task(wf):
    wf.add_task(Task("d", lambda c: c * 10))


def _add_condition(wf):
    wf.tasks["c"].when = lambda b: b > 100  # false: c is skipped


def _rename_param(wf):
    wf.params = {"other": 1}  # b's parameter k loses its binding


@pytest.mark.parametrize(
    "edit, check",
    [
        (_edit_dependency_in_place, "cycle"),
        (_replace_function, lambda r: r["c"] == 1 + 2),
        (_add_task, lambda r: r["d"] == 10),
        (_add_condition, lambda r: r.tasks["c"].state.name == "SKIPPED"),
        (_rename_param, "parameter 'k'"),
    ],
)
def test_run_after_validate_sees_later_edits(edit, check):
    """validate() then run() binds once, unless the definition changed in between:
    every kind of change that binding reads is seen by run()."""
    wf = _quiet()
    wf.params = {"k": 2}
    wf.add_task(Task("a", lambda: 1))
    wf.add_task(Task("b", lambda k: k))
    wf.add_task(Task("c", lambda a: a))
    wf.validate()
    edit(wf)
    if isinstance(check, str):  # the edit broke the definition: run() must say so
        with pytest.raises(WorkflowDefinitionError, match=check):
            wf.run()
        return
    result = wf.run()
    assert result.ok, result.tasks
    assert check(result)


def test_validate_then_run_binds_once_and_later_runs_bind_again(monkeypatch):
    """The binding validate() made is used by the next run only."""
    wf = _quiet()
    wf.add_task(Task("a", lambda: 1))
    calls = []
    real = Workflow._bind

    def counting(self, params, *, strict):
        calls.append(strict)
        return real(self, params, strict=strict)

    monkeypatch.setattr(Workflow, "_bind", counting)
    wf.validate()
    assert wf.run().ok and calls == [True]
    assert wf.run().ok and calls == [True, True]
