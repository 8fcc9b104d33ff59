"""CLI manners as a user meets them (issue: the command line as a newcomer meets it):
--version, a --help that describes the tool, and a quiet end on a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])


def _cli(folder: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowforge", *args], cwd=folder,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=120, **kw)


def test_version_and_help_describe_the_tool(tmp_path):
    from flowforge import __version__

    version = _cli(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"flowforge {__version__}"
    helped = _cli(tmp_path, "--help")
    assert "define, run, resume, schedule and watch multi-step workflows" in helped.stdout
    assert "Argument parsing" not in helped.stdout
    assert "dask" in _cli(tmp_path, "run", "--help").stdout


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`flowforge status RUN --json | head -1`: the reader closes the pipe early; the
    command ends without "[Errno 32] Broken pipe" or a traceback."""
    (tmp_path / "wide.py").write_text(textwrap.dedent('''
        from flowforge import Task, workflow

        def one(**_):
            return 1

        with workflow("wide", executor="sequential", quiet=True, progress=False) as wf:
            for i in range(3000):
                wf.add_task(Task(f"task_with_a_long_name_{i:05d}", one))
    '''))
    assert _cli(tmp_path, "run", "wide.py").returncode == 0
    run_id = json.loads(_cli(tmp_path, "history", "--json").stdout)[0]["run_id"]
    proc = subprocess.Popen([sys.executable, "-m", "flowforge", "status", run_id, "--json"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)  # like head: a little, then the pipe closes
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_health_and_ping_answer_probes_without_a_token_or_a_known_host(tmp_path):
    """GET /health and /ping at the root answer {"status": "ok"} to a load balancer or a
    Kubernetes probe (no token, the pod's IP as Host); everything else still needs both."""
    from fastapi.testclient import TestClient

    from flowforge.web import create_app

    app = create_app(str(tmp_path / "state"), token="s3cret")
    with TestClient(app, base_url="http://10.1.2.3:8080") as c:
        for path in ("/health", "/ping"):
            answer = c.get(path)
            assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        assert c.get("/api/v1/health").status_code in (400, 401, 421)
        assert c.post("/health").status_code != 200


def test_errors_speak_the_command_lines_words(tmp_path):
    nosuch = _cli(tmp_path, "status", "NOSUCH")
    assert nosuch.returncode == 2 and "see `flowforge history`" in nosuch.stderr
    assert ".runs()" not in nosuch.stderr
    limit = _cli(tmp_path, "history", "--limit", "abc")
    assert limit.returncode == 2
    assert "--limit: needs a whole number, got 'abc'" in limit.stderr
    keep = _cli(tmp_path, "clean", "--keep", "-5")
    assert keep.returncode == 2 and "--keep: must be 0 or more, got -5" in keep.stderr
    assert "prune" not in keep.stderr


def test_a_map_over_a_string_is_an_error_not_a_map_over_characters(tmp_path):
    from flowforge import task, workflow

    with workflow("chars", autosave=False, log_dir=None, quiet=True, progress=False) as wf:
        @task
        def names():
            return "alice,bob"

        @task(map="names")
        def greet(names):
            return f"hi {names}"

    result = wf.run()
    err = result.tasks["greet"].error
    assert result.tasks["greet"].state.value == "failed"
    assert "maps over 'names', whose result is a str ('alice,bob')" in str(err)
    assert "did you mean a list?" in str(err)


def test_validate_and_graph_speak_json(tmp_path):
    (tmp_path / "two.py").write_text(textwrap.dedent('''
        from flowforge import task, workflow

        with workflow("two", quiet=True, progress=False) as wf:
            @task
            def a():
                return 1

            @task
            def b(a):
                return a
    '''))
    valid = _cli(tmp_path, "validate", "two.py", "--json")
    assert valid.returncode == 0
    assert json.loads(valid.stdout) == {"valid": True, "file": "two.py", "workflow": "two",
                                        "tasks": 2}
    graph = json.loads(_cli(tmp_path, "graph", "two.py", "--json").stdout)
    assert graph == {"workflow": "two", "tasks": [{"task": "a", "upstream": []},
                                                  {"task": "b", "upstream": ["a"]}]}
    (tmp_path / "bad.yaml").write_text("name: bad\ntasks:\n  - id: a\n    call: nowhere:f\n")
    bad = _cli(tmp_path, "validate", "bad.yaml", "--json")
    assert bad.returncode == 2
    answer = json.loads(bad.stdout)
    assert answer["valid"] is False and "nowhere" in answer["problems"][0]
