"""Params are checked: a run given a param its workflow neither declares nor takes by
name is refused before anything runs; `-p NAME=TEXT` becomes the type the task expects;
a mapped subflow's items go to one clear param (flowforge/_params.py, subflow.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowforge import Workflow, task, workflow
from flowforge._params import from_text
from flowforge.errors import WorkflowDefinitionError

REPO = str(Path(__file__).resolve().parents[1])


def _quiet(name: str, tmp_path: Path, **kw: object) -> Workflow:
    return workflow(name, state_dir=str(tmp_path / "state"), log_dir=None, quiet=True,
                    progress=False, **kw)


def test_an_unknown_param_is_refused_before_anything_runs(tmp_path):
    ran = []
    with _quiet("etl", tmp_path, params={"source": "csv"}) as wf:
        @task
        def extract(source: str, limit: int = 5) -> str:
            ran.append(source)
            return source

    with pytest.raises(WorkflowDefinitionError) as err:
        wf.run({"sorce": "db"})
    assert "unknown param 'sorce'; did you mean 'source'?" in str(err.value)
    assert err.value.parameter == "sorce"
    assert ran == [] and not (tmp_path / "state").exists()
    with pytest.raises(WorkflowDefinitionError, match="unknown param 'limt'; did you mean 'limit'"):
        wf.validate({"limt": 3})
    with pytest.raises(WorkflowDefinitionError, match="unknown param 'x'"):
        wf.plan({"x": 1})
    assert wf.run({"source": "db", "limit": 2}).ok and ran == ["db"]


def test_params_taken_by_conditions_and_fixtures_are_known(tmp_path):
    with _quiet("known", tmp_path) as wf:
        @wf.fixture
        def conn(dsn: str = "sqlite://"):
            return dsn

        @task(when=lambda enabled=True: enabled)
        def use(conn: str) -> str:
            return conn

    result = wf.run({"dsn": "pg://x", "enabled": True})
    assert result.ok and result["use"] == "pg://x"


SCRIPT = textwrap.dedent('''
    from datetime import date, datetime
    from pathlib import Path
    from flowforge import task, workflow

    with workflow("typed", quiet=True, progress=False) as wf:
        @task
        def show(count: int = 1, ratio: float = 0.5, flag: bool = False, label: str = "x",
                 where: Path = Path("."), day: date | None = None,
                 at: datetime | None = None, items: list = [], opts: dict | None = None):
            return {"count": count, "ratio": ratio, "flag": flag, "label": label,
                    "where": str(where), "day": str(day), "at": str(at),
                    "items": items, "opts": opts,
                    "types": [type(v).__name__ for v in (count, ratio, flag, label)]}
''')


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": REPO, "FLOWFORGE_EXAMPLE_OUTPUT": str(tmp_path / "out")}
    return subprocess.run([sys.executable, "-m", "flowforge", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_params_take_the_type_their_task_parameter_expects(tmp_path):
    (tmp_path / "typed.py").write_text(SCRIPT)
    done = _cli(tmp_path, "run", "typed.py", "-p", "count=10", "-p", "ratio=2", "-p",
                "flag=yes", "-p", "label=123", "-p", "where=/tmp", "-p", "day=2026-12-07",
                "-p", "at=2026-12-07T09:30:00+00:00", "-p", "items=[1, 2]",
                "-p", 'opts={"a": 1}', "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["results"]["show"]
    assert shown["types"] == ["int", "float", "bool", "str"]
    assert shown["count"] == 10 and shown["ratio"] == 2.0 and shown["flag"] is True
    assert shown["label"] == "123" and shown["where"] == "/tmp"
    assert shown["day"] == "2026-12-07" and shown["at"] == "2026-12-07 09:30:00+00:00"
    assert shown["items"] == [1, 2] and shown["opts"] == {"a": 1}


@pytest.mark.parametrize(("arg", "words"), [
    ("count=ten", "-p count=ten: count takes int values, like -p count=10"),
    ("flag=maybe", "-p flag=maybe: flag takes bool values"),
    ("day=yesterday", "-p day=yesterday: day takes date values"),
    ("items={}", "-p items={}: items takes list values"),
    ("cuont=3", "unknown param 'cuont'; did you mean 'count'?"),
])
def test_a_bad_cli_param_is_a_usage_error_naming_it(tmp_path, arg, words):
    (tmp_path / "typed.py").write_text(SCRIPT)
    done = _cli(tmp_path, "run", "typed.py", "-p", arg)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()


def test_the_readme_run_with_a_limit_works(tmp_path):
    """README: `flowforge run examples/etl_workflow.py -p limit=10`."""
    done = _cli(tmp_path, "run", os.path.join(REPO, "examples", "etl_workflow.py"),
                "-p", "limit=10")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "sales_summary.json").read_text())
    assert summary["kept"] <= 10


@given(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
       st.dates(), st.datetimes(timezones=st.just(timezone(timedelta(hours=2)))))
def test_text_of_a_value_comes_back_as_that_value(n, x, b, d, t):
    with workflow("prop", autosave=False, log_dir=None, quiet=True, progress=False) as wf:
        @task
        def f(n: int = 0, x: float = 0.0, b: bool = False, d: date | None = None,
              t: datetime | None = None) -> None:
            return None

    assert from_text(wf, "n", str(n)) == n
    assert from_text(wf, "x", repr(x)) == x
    assert from_text(wf, "b", str(b)) is b
    assert from_text(wf, "d", d.isoformat()) == d
    assert from_text(wf, "t", t.isoformat()) == t


def test_a_mapped_subflows_items_go_to_one_clear_param(tmp_path):
    with _quiet("child", tmp_path, params={"greeting": "hi"}) as child:
        @task
        def greet(greeting: str, who: str) -> str:
            return f"{greeting} {who}"

    with _quiet("parent", tmp_path) as parent:
        @task
        def people() -> list[str]:
            return ["ann", "bo"]

        child.as_task("each", map="people")

    result = parent.run()
    assert result.ok, result.error
    assert [r["greet"] for r in result["each"]] == ["hi ann", "hi bo"]


def test_an_unclear_or_wrong_item_param_is_a_definition_error(tmp_path):
    with _quiet("child2", tmp_path) as child:
        @task
        def pair(left: str, right: str) -> str:
            return left + right

    with _quiet("parent2", tmp_path) as parent:
        @task
        def items() -> list[str]:
            return ["a"]

        child.as_task("each", map="items")

    with pytest.raises(WorkflowDefinitionError, match="say it with item_param="):
        parent.run()
    with _quiet("parent3", tmp_path) as parent3:
        @task
        def items() -> list[str]:  # noqa: F811 - another workflow's task
            return ["a"]

        child.as_task("each", map="items", item_param="middle")

    with pytest.raises(WorkflowDefinitionError, match="item_param='middle' is not a param"):
        parent3.run()
    with _quiet("parent4", tmp_path) as parent4:
        @task
        def items() -> list[str]:  # noqa: F811
            return ["a", "b"]

        child.as_task("each", map="items", item_param="left", params={"right": "!"})

    assert [r["pair"] for r in parent4.run()["each"]] == ["a!", "b!"]
