"""The @task decorator and the Task object."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from flowforge import Task, TaskContext, WorkflowDefinitionError, task, workflow
from tests import fixture_tasks


def test_decorated_function_stays_callable():
    """A task is still the plain function when called directly."""

    @task
    def transform(extract):
        return [x * 2 for x in extract]

    assert transform([1]) == [2]
    assert isinstance(transform, Task) and transform.name == "transform"


def test_decorator_with_options_outside_workflow():
    """@task(...) outside a block makes a free-standing Task with its options."""

    @task(retries=3, retry_delay=0.5, backoff=2.0, timeout=30, name="t")
    def f():
        return 1

    assert (f.name, f.retries, f.retry_delay, f.backoff, f.timeout) == ("t", 3, 0.5, 2.0, 30)


def test_task_inside_block_registers():
    """@task inside `with workflow()` adds the task to that workflow."""
    with workflow("w") as wf:

        @task
        def a():
            return 1

    assert list(wf.tasks) == ["a"]


def test_unknown_option_is_named():
    """A typo in an option names the option and suggests the right one."""
    with pytest.raises(TypeError, match="did you mean 'retries'"):
        task(retires=3)


def test_non_callable_task_is_definition_error():
    """A task that is not callable is a definition error naming it."""
    with pytest.raises(WorkflowDefinitionError, match="not callable"):
        Task("x", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"), [("retries", -1), ("retry_delay", -1), ("backoff", 0.5), ("timeout", 0)]
)
def test_bad_option_values(option, value):
    """Negative retries, delays and zero timeouts are rejected with the option named."""
    with pytest.raises(WorkflowDefinitionError, match=option):
        Task("x", lambda: 1, **{option: value})


def test_retry_delay_backoff_and_cap():
    """Delay before attempt k+1 is retry_delay * backoff**(k-1), capped by max_delay."""
    t = Task("x", lambda: 1, retries=5, retry_delay=0.5, backoff=2.0, max_delay=3.0)
    assert [t.retry_delay_for(a) for a in range(2, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_in_range():
    """Jitter scales the delay into [0.5, 1.0] of its value."""
    t = Task("x", lambda: 1, retries=1, retry_delay=1.0, jitter=True)
    assert all(0.5 <= t.retry_delay_for(2) <= 1.0 for _ in range(100))


def test_module_task_pickles_by_reference():
    """A module-level task pickles as a reference, even with plain pickle."""
    data = pickle.dumps(fixture_tasks.add_one)
    assert len(data) < 200
    assert pickle.loads(data) is fixture_tasks.add_one


def test_local_task_pickles_by_value():
    """A task defined in a function round-trips through cloudpickle by value."""
    k = 10

    @task
    def local(x):
        return x + k

    clone = cloudpickle.loads(cloudpickle.dumps(local))
    assert clone(1) == 11 and clone.name == "local"


def test_context_get_input_names_known_inputs():
    """get_input of a missing name lists the inputs the task has."""
    ctx = TaskContext(run_id="r", workflow="w", task="t", attempt=1, inputs={"a": 1})
    assert ctx.get_input("a") == 1
    with pytest.raises(KeyError, match="'a'"):
        ctx.get_input("b")
