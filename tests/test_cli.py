"""The flowforge command: exit codes, tables and --json, through real subprocesses and
through main() in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest

from flowforge.cli import main
from tests.waiting import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLOW = textwrap.dedent('''
    from flowforge import task, workflow

    with workflow("demo", executor="sequential", quiet=True, progress=False) as wf:
        @task
        def numbers(n=3):
            return list(range(n))

        @task
        def total(numbers, fail=False):
            if fail:
                raise RuntimeError("asked to fail")
            return sum(numbers)
''')


@pytest.fixture
def flow(tmp_path):
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return str(path)


def cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "flowforge", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_succeeds_fails_and_refuses_with_the_documented_exit_codes(flow):
    """0 for a good run, 1 for a failed one (naming the task and the log), 2 for usage."""
    assert cli("run", flow, "-p", "n=4").returncode == 0
    failed = cli("run", flow, "--fresh", "-p", "fail=true")
    assert failed.returncode == 1
    assert "failed tasks: total" in failed.stderr and "workflow.log" in failed.stderr
    missing = cli("run", "nowhere.py")
    assert missing.returncode == 2 and "nowhere.py: no such file" in missing.stderr
    bad = cli("run", flow, "--params", "[1]")
    assert bad.returncode == 2 and "--params takes a JSON object" in bad.stderr


def test_run_takes_params_from_a_file_or_stdin(flow, tmp_path):
    """--params-file PATH and --params-file - (stdin) give the params as a JSON object;
    bad JSON, a missing file or a non-object is a usage error naming the flag."""
    path = tmp_path / "params.json"
    path.write_text('{"n": 5}')
    assert cli("run", flow, "--params-file", str(path)).returncode == 0
    env = {**os.environ, "PYTHONPATH": REPO}
    piped = subprocess.run([sys.executable, "-m", "flowforge", "run", flow, "--fresh",
                            "--params-file", "-"], input='{"n": 6}', env=env,
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    from flowforge.persistence import PersistenceManager

    assert [r.params for r in PersistenceManager("state").runs()] == [{"n": 6}, {"n": 5}]
    path.write_text("{n: 5")
    bad = cli("run", flow, "--params-file", str(path))
    assert bad.returncode == 2
    assert f"flowforge run: --params-file {path}: not JSON (" in bad.stderr
    assert "give a JSON object" in bad.stderr
    path.write_text("[5]")
    listed = cli("run", flow, "--params-file", str(path))
    assert listed.returncode == 2 and "--params-file takes a JSON object" in listed.stderr
    missing = cli("run", flow, "--params-file", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert "none.json: cannot read it (No such file or directory)" in missing.stderr
    both = cli("run", flow, "--params", "{}", "--params-file", str(path))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_history_lists_an_unreadable_run_file_and_the_rest(flow, tmp_path):
    """With a garbage .run file beside real runs, `flowforge history` (and `list`) exit 0,
    show the other runs and the bad one as 'unreadable', and say why on stderr."""
    assert cli("run", flow).returncode == 0
    bad = next((tmp_path / "state").glob("*/*.run")).with_name("20200101T000000-bad.run")
    bad.write_bytes(b"garbage")
    os.utime(bad, (1577836800, 1577836800))  # written 2020-01-01: listed by that date
    table = cli("history")
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["WORKFLOW", "RUN_ID", "STATUS"]
    assert [line.split()[2] for line in lines[1:]] == ["succeeded", "unreadable"]
    assert "run 20200101T000000-bad of 'demo' is unreadable: " in table.stderr
    assert str(bad) in table.stderr
    as_json = cli("history", "--json")
    rows = json.loads(as_json.stdout)
    assert [r["status"] for r in rows] == ["succeeded", "unreadable"]
    assert str(bad) in rows[1]["reason"]
    listed = cli("list")
    assert listed.returncode == 0 and "succeeded" in listed.stdout


def test_history_status_and_list_read_the_state_folder(flow, capsys):
    """history/list/status show saved runs as tables or --json."""
    assert main(["run", flow]) == 0
    assert main(["run", flow, "--fresh", "-p", "fail=true"]) == 1
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in runs] == ["failed", "succeeded"]
    assert main(["history", "--status", "succeeded"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["WORKFLOW", "RUN_ID", "STATUS"] and len(table) == 2
    assert runs[0]["total"] == 2 and runs[0]["succeeded"] == 1 and runs[0]["failed"] == 1
    assert datetime.fromisoformat(runs[0]["started"]).utcoffset() is not None
    assert main(["status", runs[0]["run_id"], "--json"]) == 0  # tasks with or without --tasks
    status = json.loads(capsys.readouterr().out)
    states = {t["task"]: (t["state"], t["attempts"]) for t in status["tasks"]}
    assert states == {"numbers": ("succeeded", 1), "total": ("failed", 1)}
    assert [status[k] for k in ("total", "succeeded", "failed", "cancelled", "skipped",
                                "interrupted")] == [2, 1, 1, 0, 0, 0]
    assert "RuntimeError" in next(t for t in status["tasks"] if t["task"] == "total")["error"]
    assert main(["list", "--json"]) == 0
    assert [r["workflow"] for r in json.loads(capsys.readouterr().out)] == ["demo"]
    assert main(["clean", "--keep", "1"]) == 0
    assert "deleted 1 run(s)" in capsys.readouterr().out


def test_plan_validate_graph_and_export(flow, capsys, tmp_path):
    """plan, validate, graph and export work on a file without running it."""
    assert main(["validate", flow]) == 0
    assert "workflow 'demo' is valid (2 tasks)" in capsys.readouterr().out
    assert main(["plan", flow, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [t["action"] for t in plan["tasks"]] == ["run", "run"]
    assert main(["graph", flow]) == 0
    assert "total    <- numbers" in capsys.readouterr().out
    out = tmp_path / "dag.dot"
    assert main(["export", flow, "--format", "dot", "-o", str(out)]) == 0
    assert '"numbers" -> "total";' in out.read_text()
    assert main(["export", flow, "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in exported["tasks"]] == ["numbers", "total"]
    assert exported["tasks"][1]["with"] == {"numbers": "${numbers}"}  # a definition:
    assert exported["tasks"][1]["call"].endswith(":total")  # the same as the YAML export


def test_a_file_that_does_not_load_is_a_usage_error(tmp_path, capsys):
    """A syntax error or a file without workflows exits 2 with a message."""
    broken = tmp_path / "broken.py"
    broken.write_text("x = (\n")
    assert main(["validate", str(broken)]) == 2
    assert "SyntaxError" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["validate", str(empty)]) == 2
    assert "defines no workflow" in capsys.readouterr().err


def test_schedule_runs_in_the_foreground_until_sigterm_and_jobs_lists_it(flow):
    """flowforge schedule keeps running until SIGTERM, then exits 0; flowforge jobs shows
    the job with its next run."""
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", "schedule", flow, "--cron", "@yearly",
         "--name", "yearly-demo"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "job 'yearly-demo'" in line and "Ctrl-C stops it" in line
        listed = cli("jobs", "--json")
        assert listed.returncode == 0
        (job,) = json.loads(listed.stdout)
        assert job["job"] == "yearly-demo" and job["next_run"].endswith("01-01T00:00:00+00:00")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


SLOW = textwrap.dedent('''
    import os, time
    from flowforge import task, workflow

    with workflow("slow", executor="thread", quiet=True, progress=False) as wf:
        @task
        def first(n=2):
            return n

        @task
        def wait(first):
            open("started", "w").close()
            for _ in range(600):
                if os.path.exists("release"):
                    return first
                time.sleep(0.05)
            raise TimeoutError("never released")
''')


def _slow_run(tmp_path):
    """`flowforge run` of SLOW (n=7) in a process of its own, once its first task has
    started; the process and the environment it runs with."""
    path = tmp_path / "slow.py"
    path.write_text(SLOW)
    env = {**os.environ, "PYTHONPATH": REPO}
    runner = subprocess.Popen([sys.executable, "-m", "flowforge", "run", str(path), "-p", "n=7"],
                              cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "started").exists() or runner.poll() is not None,
                   timeout=60, what="the run's first task to start")
        assert runner.poll() is None, runner.stderr.read()
    except BaseException:
        runner.kill()
        raise
    return runner, env


def test_cancel_from_another_process_then_resume(tmp_path):
    """`flowforge cancel RUN_ID` stops a run in another process, which saves and ends
    cancelled (exit 130, as after Ctrl-C); `flowforge resume RUN_ID` then finishes it with
    the same params."""
    runner, env = _slow_run(tmp_path)
    try:
        runs = json.loads(subprocess.run(
            [sys.executable, "-m", "flowforge", "history", "--json"], cwd=tmp_path, env=env,
            capture_output=True, text=True, check=True).stdout)
        run_id = runs[0]["run_id"]
        cancel = subprocess.run([sys.executable, "-m", "flowforge", "cancel", run_id],
                                cwd=tmp_path, env=env, capture_output=True, text=True)
        assert cancel.returncode == 0, cancel.stderr
        assert runner.wait(timeout=60) == 130
        assert f"run {run_id} cancelled" in runner.stderr.read()
    finally:
        if runner.poll() is None:
            runner.kill()
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "flowforge", "status", run_id, "--json"], cwd=tmp_path,
        env=env, capture_output=True, text=True, check=True).stdout)
    assert status["status"] == "cancelled"
    again = subprocess.run([sys.executable, "-m", "flowforge", "cancel", run_id],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "is not running" in again.stderr
    (tmp_path / "release").touch()
    resumed = subprocess.run([sys.executable, "-m", "flowforge", "resume", run_id],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(subprocess.run(
        [sys.executable, "-m", "flowforge", "status", run_id, "--json", "--tasks"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout)
    assert final["status"] == "succeeded" and final["restored"] == 1


def test_graph_to_a_picture_needs_graphviz(flow, tmp_path, capsys):
    """graph -o dag.svg draws with Graphviz's dot, or says how to get it."""
    import shutil

    code = main(["graph", flow, "-o", str(tmp_path / "dag.svg")])
    if shutil.which("dot"):
        assert code == 0 and (tmp_path / "dag.svg").read_text().lstrip().startswith("<")
    else:
        assert code == 2 and "apt install graphviz" in capsys.readouterr().err


def test_file_errors_and_empty_tables_are_not_tracebacks(flow, tmp_path, capsys):
    """Writing to a folder that does not exist exits 2 with the reason; a run with no task
    records shows an empty table."""
    assert main(["export", flow, "-o", str(tmp_path / "nowhere" / "x.yaml")]) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_an_empty_table_prints_its_header(capsys):
    """A run with no task records yet prints the header, not a traceback."""
    from flowforge.cli.output import table as _table

    _table([], ["task", "state"])
    assert capsys.readouterr().out.split() == ["TASK", "STATE"]


def test_ctrl_c_ends_flowforge_run_with_exit_130(tmp_path):
    """A real SIGINT to `flowforge run` cancels the run and exits 130 (a failed run is 1,
    bad usage 2), naming the run and how to resume it."""
    runner, _ = _slow_run(tmp_path)
    try:
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=60) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
    err = runner.stderr.read()
    assert "cancelled; `flowforge resume " in err and "Traceback" not in err
