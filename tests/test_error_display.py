"""What a failed run shows (flowforge/listeners/logging.py, _private/codefile.py): each
failed task's error with the end of its traceback, naming the script's real file and
line with the source line (also from a process worker, where cloudpickle would say
"<dynamic-code>"), and where to look next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])

SCRIPT = textwrap.dedent('''
    from flowforge import task, workflow

    def helper(n):
        raise ValueError(f"bad value {n}")

    with workflow("shows", progress=False) as wf:
        @task
        def boom():
            return helper(7)

        @task
        def fine():
            return 1
''')


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_failed_run_ends_with_each_failure_and_where_to_look(tmp_path, executor):
    script = tmp_path / "shows.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "flowforge", "run", str(script), "--executor", executor],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 1
    err = done.stderr
    tail = err[err.index("failed boom: ValueError: bad value 7"):]
    assert f'File "{script}", line 5, in helper' in tail
    assert 'raise ValueError(f"bad value {n}")' in tail  # the source line
    assert "<dynamic-code>" not in err and "flowforge/_" not in tail
    run_id = json.loads(subprocess.run(
        [sys.executable, "-m", "flowforge", "history", "--json"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
        check=True).stdout)[0]["run_id"]
    assert f"details: flowforge status {run_id} --tasks" in tail
    logged = [json.loads(line) for line in (tmp_path / "logs" / "workflow.log").open()]
    failed = next(x for x in logged if x["event"] == "task_failed")
    assert f'File "{script}", line 10, in boom' in failed["traceback"]
