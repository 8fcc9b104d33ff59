"""A running or interrupted run's counts and task states come from its journal, and add
up (flowforge/persistence/progress.py): shown by history, status, the API and plan, for
a run whose driver was killed with SIGKILL while a task ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.waiting import wait_until

REPO = str(Path(__file__).resolve().parents[1])

CHAIN = textwrap.dedent('''
    import os, time
    from flowforge import Task, workflow

    def step(name):
        def run(**_):
            if name == "t3":
                open("t3-started", "w").close()
                time.sleep(300)
            return name
        return run

    with workflow("chain6", executor="sequential", quiet=True, progress=False) as wf:
        for i in range(6):
            wf.add_task(Task(f"t{i}", step(f"t{i}"), depends_on=[f"t{i-1}"] if i else []))

    if __name__ == "__main__":
        wf.run()
''')


def _flowforge(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowforge", *args], cwd=folder,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=120)


def test_an_interrupted_run_counts_its_finished_tasks_and_names_the_one_running(tmp_path):
    (tmp_path / "chain6.py").write_text(CHAIN)
    proc = subprocess.Popen([sys.executable, "chain6.py"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        wait_until(lambda: (tmp_path / "t3-started").exists() or proc.poll() is not None,
                   60, "task t3 to start")
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = json.loads(_flowforge(tmp_path, "history", "--json").stdout)
    assert run["status"] == "interrupted"
    assert (run["total"], run["succeeded"], run["interrupted"]) == (6, 3, 1)
    assert run["duration"] is not None and run["duration"] >= 0
    status = json.loads(_flowforge(tmp_path, "status", run["run_id"], "--json").stdout)
    assert [t["state"] for t in status["tasks"]] == (
        ["succeeded"] * 3 + ["interrupted"] + ["pending"] * 2)
    text = _flowforge(tmp_path, "history").stdout
    assert "3/6 ok, 1 interrupted" in text
    plan = json.loads(_flowforge(tmp_path, "plan", "chain6.py", "--json").stdout)
    reasons = {t["task"]: t["reason"] for t in plan["tasks"]}
    assert reasons["t3"] == "was running when the run stopped"
    assert reasons["t4"] == "not reached last time"


def test_the_api_lists_the_same_counts(tmp_path):
    """/api/v1/runs reads runs through the same manager: an interrupted run's counts."""
    from fastapi.testclient import TestClient

    from flowforge.web import create_app

    (tmp_path / "chain6.py").write_text(CHAIN)
    proc = subprocess.Popen([sys.executable, "chain6.py"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        wait_until(lambda: (tmp_path / "t3-started").exists(), 60, "task t3 to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with TestClient(create_app(str(tmp_path / "state")), base_url="http://127.0.0.1") as c:
        (run,) = c.get("/api/v1/runs").json()["runs"]
    assert (run["status"], run["succeeded"], run["interrupted"]) == ("interrupted", 3, 1)
