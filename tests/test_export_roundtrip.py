"""`flowforge export` of a script writes a definition that runs the same: its calls
resolve from where the export is saved (`call: simple:a` beside simple.py), for YAML and
JSON alike, and the CLI runs it back (issue: export round trips that work)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])

SIMPLE = textwrap.dedent('''
    from flowforge import task, workflow

    with workflow("simple", quiet=True, progress=False, params={"k": 3}) as wf:
        @task
        def a(k):
            return list(range(k))

        @task
        def b(a):
            return sum(a) * 10
''')


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowforge", *args], cwd=folder,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_an_exported_script_runs_back_with_the_same_results(tmp_path, fmt):
    (tmp_path / "simple.py").write_text(SIMPLE)
    out = tmp_path / f"out.{fmt}"
    exported = _cli(tmp_path, "export", "simple.py", "--format", fmt, "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "simple:a" in out.read_text() and "__flowforge_target__" not in out.read_text()
    script = json.loads(_cli(tmp_path, "run", "simple.py", "--json", "--fresh").stdout)
    other = tmp_path / "elsewhere"  # run from another folder: calls resolve beside the file
    other.mkdir()
    again = _cli(other, "run", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["results"] == script["results"] == {"a": [0, 1, 2],
                                                                         "b": 30}


def test_an_export_saved_where_the_script_cannot_be_imported_is_refused(tmp_path):
    (tmp_path / "simple.py").write_text(SIMPLE)
    (tmp_path / "sub").mkdir()
    refused = _cli(tmp_path / "sub", "export", "../simple.py", "--format", "yaml", "-o",
                   "out.yaml")
    assert refused.returncode == 2
    assert "save the export beside that file" in refused.stderr
