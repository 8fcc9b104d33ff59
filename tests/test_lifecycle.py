"""Task lifecycle: one function moves a task, checks every move, and keeps its counters."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowforge import InvalidTransitionError, TaskState
from flowforge._engine.lifecycle import move, new_records
from flowforge.states import ALLOWED

FLOWFORGE = pathlib.Path(__file__).resolve().parent.parent / "flowforge"


@given(st.lists(st.sampled_from(list(TaskState)), max_size=12))
def test_any_sequence_of_moves_follows_the_allowed_table(moves):
    """Every move either follows ALLOWED or raises with the task's name; attempts count
    the moves into RUNNING (and a failure before start), and a final state is kept."""
    rec = new_records(["t"])["t"]
    attempts = 0
    for new in moves:
        old = rec.state
        if new in ALLOWED.get(old, ()):
            move(rec, new, error=ValueError("x") if new is TaskState.FAILED else None)
            if new is TaskState.RUNNING or (new is TaskState.FAILED and old is TaskState.PENDING):
                attempts += 1
            assert rec.state is new
        else:
            with pytest.raises(InvalidTransitionError, match="task 't' cannot go from"):
                move(rec, new)
            assert rec.state is old
        assert rec.attempts == attempts
        if rec.state.finished:
            assert rec.finished is not None


def test_a_failure_before_start_is_its_own_move():
    """PENDING -> FAILED counts the attempt it would have been and keeps the error."""
    rec = new_records(["t"])["t"]
    error = ValueError("condition raised")
    move(rec, TaskState.FAILED, error=error)
    assert (rec.state, rec.attempts, rec.error) == (TaskState.FAILED, 1, error)
    assert rec.started == rec.finished


def test_only_the_lifecycle_writes_a_task_state():
    """No module but lifecycle.py assigns ``<record>.state`` (TaskRun's own __init__
    aside): every move goes through the check."""
    offenders = []
    for path in FLOWFORGE.rglob("*.py"):
        if path.name == "lifecycle.py" or path.name == "result.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            )
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    offenders.append(f"{path.relative_to(FLOWFORGE)}:{node.lineno}")
    assert offenders == []
