"""YAML/JSON definitions: loading, running, safe expressions, clear errors with lines,
and round trips between Python, YAML and back."""

from __future__ import annotations

import json
import textwrap

import pytest

from flowforge import WorkflowDefinitionError, load, task, workflow
from flowforge.cli import main
from flowforge.definitions.loading import load_definition
from flowforge.definitions.schema import SCHEMA
from tests import fixture_definition as fx

GOOD = """\
name: demo
params:
  n: {type: integer, default: 4}
  label: {type: string, required: true}
tasks:
  - id: numbers
    call: tests.fixture_definition:numbers
    with: {n: "${params.n}"}
  - id: total
    call: tests.fixture_definition:total
    with: {numbers: "${numbers}"}
    retry: {attempts: 2, delay: 0, backoff: exponential}
  - id: route
    type: condition
    if: "${total} > 3 and ${params.n} > 0"
    then: [big]
    else: [small]
  - id: big
    call: mytasks:shout
    with: {text: "big ${total}"}
  - id: small
    call: mytasks:shout
    with: {text: "small"}
  - id: doubled
    call: tests.fixture_definition:double
    map: "${numbers}"
    with: {x: "${item}"}
  - id: report
    call: tests.fixture_definition:describe
    trigger: none_failed
    with: {total: "${total}", label: "${params.label}"}
"""

MYTASKS = "def shout(text):\n    return text.upper()\n"


@pytest.fixture
def good(tmp_path):
    (tmp_path / "mytasks.py").write_text(MYTASKS)  # beside the YAML file: importable
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD)
    return path


def test_a_yaml_workflow_runs_with_conditions_maps_params_and_retries(good):
    """Every construct of the example: params with types, ${} references, a condition
    choosing a branch, a map over a result, a trigger."""
    wf = load_definition(str(good))
    result = wf.run(params={"label": "sum"})
    assert result.ok, result.error
    assert result["total"] == 6 and result["big"] == "BIG 6"
    assert result.tasks["small"].state == "skipped"
    assert result["doubled"] == [0, 2, 4, 6]
    assert result["report"] == "sum=6"
    assert wf.tasks["total"].retries == 1 and wf.tasks["total"].backoff == 2.0


def test_params_are_typed_and_checked_before_the_run(good, capsys):
    """A missing required param or a wrong type is an error naming the param; the CLI
    exits 2."""
    wf = load_definition(str(good))
    with pytest.raises(WorkflowDefinitionError, match="needs param 'label' \\(string\\)"):
        wf.run()
    with pytest.raises(WorkflowDefinitionError, match="param 'n' must be integer, got 'four'"):
        wf.run(params={"label": "x", "n": "four"})
    assert main(["run", str(good), "-p", "label=x", "-p", "n=four"]) == 2
    assert "-p n=four: n takes int values, like -p n=10" in capsys.readouterr().err


BAD = {
    "syntax": ("name: x\ntasks: [\n", r"bad\.yaml:3: not valid YAML"),
    "unknown key": (
        "name: x\ntasks:\n  - id: a\n    call: m:f\n    colour: red\n",
        r"bad\.yaml:3: tasks\.0: Additional properties are not allowed \('colour'",
    ),
    "cycle": (
        "name: x\ntasks:\n  - id: a\n    call: tests.fixture_definition:double\n"
        "    with: {x: \"${b}\"}\n  - id: b\n    call: tests.fixture_definition:double\n"
        "    with: {x: \"${a}\"}\n",
        r"bad\.yaml:\d+: .*cycle",
    ),
    "bad reference": (
        "name: x\ntasks:\n  - id: a\n    call: tests.fixture_definition:double\n"
        "    with: {x: \"${nope.field}\"}\n",
        r"bad\.yaml:3: task 'a': \$\{nope\} refers to no task",
    ),
    "unknown function": (
        "name: x\ntasks:\n  - id: a\n    call: tests.fixture_definition:missing\n",
        r"bad\.yaml:3: task 'a': cannot import 'tests\.fixture_definition:missing'",
    ),
    "wrong param type": (
        "name: x\nparams:\n  n: {type: whole}\ntasks:\n  - id: a\n    call: m:f\n",
        r"bad\.yaml:3: params\.n\.type: 'whole' is not one of",
    ),
    "unsafe expression": (
        "name: x\ntasks:\n  - id: a\n    call: tests.fixture_definition:double\n"
        "    with: {x: \"${__import__('os')}\"}\n",
        r"\$\{__import__\} refers to no task",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_definition_has_its_own_clear_message(tmp_path, case):
    """Syntax errors, unknown keys, cycles, bad references, unknown functions and wrong
    types each say what and (for YAML) on which line."""
    text, pattern = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowDefinitionError, match=pattern):
        load_definition(str(path))


def test_python_to_yaml_to_run_gives_the_same_results(tmp_path):
    """A DSL workflow of importable functions exports to YAML that runs the same."""
    with workflow("py", executor="sequential", params={"n": 5}, log_dir=None,
                  quiet=True) as wf:
        task(name="numbers")(fx.numbers)
        task(name="total", retries=1)(fx.total)
        task(name="describe")(fx.describe)
    expected = dict(wf.run(fresh=True).results)
    path = tmp_path / "py.yaml"
    path.write_text(wf.to_yaml())
    again = load_definition(str(path))
    again.log_dir = None
    assert dict(again.run(fresh=True).results) == expected


def test_yaml_to_workflow_to_yaml_round_trips(good, tmp_path):
    """Loading a definition and exporting it gives a definition that loads the same."""
    first = load_definition(str(good))
    (tmp_path / "again.yaml").write_text(first.to_yaml())
    second = load_definition(str(tmp_path / "again.yaml"))
    def by_id(wf):
        return sorted(wf.to_dict()["tasks"], key=lambda t: t["id"])

    assert by_id(first) == by_id(second)
    assert second.to_yaml() == first.to_yaml()


def test_json_definitions_and_the_published_schema(tmp_path, capsys):
    """The same document as JSON loads; `flowforge schema` prints the JSON Schema."""
    doc = {"name": "j", "tasks": [{"id": "n", "call": "tests.fixture_definition:numbers",
                                   "with": {"n": 3}}]}
    path = tmp_path / "j.json"
    path.write_text(json.dumps(doc))
    assert load(str(path))["j"].run().results["n"] == [0, 1, 2]
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA


def test_a_subflow_from_another_file(tmp_path):
    """type: subflow with file: runs the other definition as one task."""
    (tmp_path / "inner.yaml").write_text(textwrap.dedent("""\
        name: inner
        tasks:
          - id: numbers
            call: tests.fixture_definition:numbers
            with: {n: 3}
        """))
    (tmp_path / "outer.yaml").write_text(textwrap.dedent("""\
        name: outer
        tasks:
          - id: sub
            type: subflow
            file: inner.yaml
          - id: total
            call: tests.fixture_definition:total
            with: {numbers: "${sub.numbers}"}
        """))
    result = load_definition(str(tmp_path / "outer.yaml")).run()
    assert result.ok and result["total"] == 3


LOOPY = """\
name: loopy
limits: {cpus: 4, max_concurrent_tasks: 2}
rate_limits: {api: "100/s"}
concurrency: {db: 1}
params:
  target: {type: number, default: 10}
tasks:
  - id: numbers
    call: tests.fixture_definition:numbers
    with: {n: 4}
    resources: {cpus: 1, memory: 64MiB}
    tags: [db, api]
    rate_limit: "50/s"
  - id: grow
    call: tests.fixture_definition:total
    with: {numbers: "${numbers}"}
    loop: {max_iterations: 5, until: "${result} >= 6", on_exhausted: fail}
  - id: only_if_big
    call: tests.fixture_definition:double
    with: {x: "${grow}"}
    when: "${grow} > ${params.target}"
  - id: only_if_small
    call: tests.fixture_definition:double
    with: {x: "${grow}"}
    when: "${grow} <= ${params.target}"
"""


def test_when_loop_resources_and_limits_have_a_yaml_form(tmp_path):
    """when:, loop: with until:, resources:, tags, rate_limit and workflow limits load,
    run, and export back to the same definition."""
    path = tmp_path / "loopy.yaml"
    path.write_text(LOOPY)
    wf = load_definition(str(path))
    result = wf.run()
    assert result.ok, result.error
    assert result["grow"] == 6
    assert result.tasks["only_if_big"].state == "skipped" and result["only_if_small"] == 12
    assert wf.tasks["numbers"].resources.cpus == 1 and wf.tasks["numbers"].tags == ("db", "api")
    assert result.metrics.peak["tasks"] <= 2
    (tmp_path / "again.yaml").write_text(wf.to_yaml())
    again = load_definition(str(tmp_path / "again.yaml"))
    assert again.to_yaml() == wf.to_yaml()
    assert again.run(fresh=True)["only_if_small"] == 12


UNTIL = """\
name: until
params:
  target: {type: integer, default: 3}
tasks:
  - id: step
    call: tests.fixture_definition:plus_one
    with: {x: "${previous}"}
    loop: {max_iterations: 10, until: "UNTIL"}
"""


def test_a_yaml_loop_reads_its_previous_result_and_until_its_iteration_and_params(tmp_path):
    """A looping task's with: sees ${previous} (None at first) and ${iteration}; until:
    sees ${result}, ${iteration} (from 0) and ${params.NAME}."""
    path = tmp_path / "until.yaml"
    path.write_text(UNTIL.replace("UNTIL", "${result} >= ${params.target} and ${iteration} >= 1"))
    wf = load_definition(str(path))
    assert wf.run(fresh=True)["step"] == 3
    assert wf.run(params={"target": 5}, fresh=True)["step"] == 5
    assert wf.run(params={"target": 0}, fresh=True)["step"] == 2  # iteration 1 at least
    (tmp_path / "again.yaml").write_text(wf.to_yaml())
    assert load_definition(str(tmp_path / "again.yaml")).to_yaml() == wf.to_yaml()


@pytest.mark.parametrize(("until", "fault"), [
    ("${reslt} > 2", "${reslt} is not known there"),
    ("${result} > threshold", "${threshold} is not known there"),
    ("${result} > ${params.nope}", "${params.nope} names no param"),
])
def test_loop_until_names_are_checked_when_the_file_loads(tmp_path, until, fault):
    """A name until: cannot read is an error with the file, line and task, before any run."""
    path = tmp_path / "until.yaml"
    path.write_text(UNTIL.replace("UNTIL", until))
    with pytest.raises(WorkflowDefinitionError) as err:
        load_definition(str(path))
    assert fault in str(err.value) and f"{path}:5" in str(err.value)
    assert "'step'" in str(err.value)


LOOP_AND_TASK = """\
name: names
tasks:
  - id: previous
    call: tests.fixture_definition:plus_one
    with: {x: 9}
  - id: step
    call: tests.fixture_definition:plus_one
    WITH
    loop: {max_iterations: 2}
"""


@pytest.mark.parametrize(("with_", "fault"), [
    ('with: {x: "${previous}"}', "rename that task"),
    ('with: {x: "${iteration}"}\n    when: "${iteration} > 0"',
     "only the with: of a looping task reads it"),
])
def test_loop_names_never_hide_a_task_of_that_name(tmp_path, with_, fault):
    """In a looping task's with:, ${previous} and ${iteration} are the loop's: a task of
    that name is refused rather than silently hidden, and outside with: they are
    nobody's."""
    path = tmp_path / "names.yaml"
    path.write_text(LOOP_AND_TASK.replace("WITH", with_))
    with pytest.raises(WorkflowDefinitionError) as err:
        load_definition(str(path))
    assert fault in str(err.value) and "'step'" in str(err.value)


FIXTURES_YAML = """\
name: shared
params:
  prefix: {type: string, default: "#"}
fixtures:
  store: {call: tests.fixture_definition:open_store, with: {prefix: "${params.prefix}"}}
tasks:
  - id: numbers
    call: tests.fixture_definition:numbers
    with: {n: 3}
  - id: labels
    call: tests.fixture_definition:tag
    map: "${numbers}"
    with: {store: "${store}", value: "${item}"}
  - id: pairs
    call: tests.fixture_definition:add
    map: {a: "${numbers}", b: "${numbers}"}
    with: {a: "${item.a}", b: "${item.b}"}
  - id: fails
    call: tests.fixture_definition:boom
    on_error: continue
    on_failure: {call: tests.fixture_definition:remember_failure}
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_shared_resources_lockstep_maps_and_failure_hooks_in_yaml(tmp_path, executor):
    """fixtures: reach tasks by ${name}; map: {a: ..., b: ...} goes in lockstep;
    a task's on_failure: hook is called."""
    path = tmp_path / "shared.yaml"
    path.write_text(FIXTURES_YAML)
    wf = load_definition(str(path))
    wf.executor = executor
    fx.failures.clear()
    result = wf.run()
    assert result.ok, result.error
    assert result["labels"] == ["#0", "#1", "#2"]
    assert result["pairs"] == [0, 2, 4]
    assert fx.failures == ["fails"]
    (tmp_path / "again.yaml").write_text(wf.to_yaml())
    again = load_definition(str(tmp_path / "again.yaml"))
    assert again.to_yaml() == wf.to_yaml()


def test_a_python_map_exports_to_yaml_and_runs_the_same(tmp_path):
    """map="numbers" in the DSL becomes map: "${numbers}" in YAML, with the same results."""
    with workflow("pm", executor="thread", log_dir=None, quiet=True, params={"n": 4}) as wf:
        task(name="numbers")(fx.numbers)
        task(name="square", map="numbers")(fx.square)
    expected = dict(wf.run(fresh=True).results)
    path = tmp_path / "pm.yaml"
    path.write_text(wf.to_yaml())
    assert "map: ${numbers}" in path.read_text()
    again = load_definition(str(path))
    again.log_dir = None
    got = dict(again.run(fresh=True).results)
    assert got["square"] == expected["square"] == [0, 1, 4, 9]


def test_expression_details_follow_python_and_text_is_left_alone(tmp_path):
    """`or` gives the deciding operand (a default), 'params.' in plain text is not a
    reference, a repeated key is an error with both lines, and export keeps max_delay
    and max_workers."""
    path = tmp_path / "d.yaml"
    path.write_text(textwrap.dedent("""\
        name: d
        max_workers: 3
        params:
          label: {type: string, default: ""}
        tasks:
          - id: shout
            call: mytasks:shout
            with: {text: "${params.label or 'anon'}"}
            retry: {attempts: 2, delay: 0.5, max_delay: 2}
          - id: note
            call: mytasks:shout
            with: {text: "see params.txt"}
        """))
    (tmp_path / "mytasks.py").write_text(MYTASKS)
    wf = load_definition(str(path))
    result = wf.run()
    assert result["shout"] == "ANON" and result["note"] == "SEE PARAMS.TXT"
    again = tmp_path / "again.yaml"
    again.write_text(wf.to_yaml())
    reloaded = load_definition(str(again))
    assert reloaded.max_workers == 3 and reloaded.tasks["shout"].max_delay == 2
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\ntasks:\n  - id: a\n    call: m:f\n    call: m:g\n")
    with pytest.raises(WorkflowDefinitionError, match=r"dup\.yaml:5: tasks\.0\.call is given "
                       r"twice \(first on line 4\)"):
        load_definition(str(dup))


def test_old_module_warns_and_still_offers_the_old_names():
    """flowforge.definition is a deprecated shim: importing it warns with the new place,
    and its names are the ones in flowforge.definitions and flowforge.export."""
    import importlib
    import sys

    from flowforge.definitions.params import check_params
    from flowforge.definitions.tasktypes import DefinitionTask
    from flowforge.export import to_yaml

    sys.modules.pop("flowforge.definition", None)
    with pytest.warns(DeprecationWarning, match=r"flowforge\.definitions"):
        old = importlib.import_module("flowforge.definition")
    assert old.load_definition is load_definition and old.SCHEMA is SCHEMA
    assert old.DefinitionTask is DefinitionTask and old.check_params is check_params
    assert old.to_yaml is to_yaml


def test_the_package_loads_its_names_on_first_use():
    """Importing flowforge.definitions imports no submodule (so flowforge._workflow can
    import its params module without importing itself back); a name loads on use."""
    import subprocess
    import sys

    code = ("import sys, flowforge.definitions as d; "
            "print(sorted(m for m in sys.modules if m.startswith('flowforge.definitions.')), "
            "'flowforge._workflow' in sys.modules); d.load_definition; "
            "print('flowforge.definitions.loading' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[] False", "True"]


def test_the_old_shared_section_still_loads_with_a_warning_and_not_beside_fixtures(tmp_path):
    """shared:, the last release's name of fixtures:, loads the same fixtures with a
    warning naming the file; giving both is an error naming the field."""
    old = tmp_path / "old.yaml"
    old.write_text(FIXTURES_YAML.replace("\nfixtures:\n", "\nshared:\n"))
    with pytest.warns(DeprecationWarning, match="shared: is now called fixtures:"):
        wf = load_definition(str(old))
    assert set(wf.fixtures) == {"store"}
    both = tmp_path / "both.yaml"
    both.write_text(FIXTURES_YAML.replace("\nfixtures:\n", "\nshared: {}\nfixtures:\n"))
    with pytest.raises(WorkflowDefinitionError, match="both fixtures: and shared: are given"):
        load_definition(str(both))
