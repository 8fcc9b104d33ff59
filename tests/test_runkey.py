"""Which run a new run resumes (flowforge/persistence/runkey.py): only a run of the same
workflow name, defining file and params (and fire time, for the scheduler). Scripts run
as users run them: separate files, real processes, a scheduler killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.waiting import wait_until

REPO = str(Path(__file__).resolve().parents[1])

SCRIPT = textwrap.dedent('''
    import os, sys
    from flowforge import task, workflow

    with workflow("shared-name", quiet=True, progress=False) as wf:
        @task
        def first(n: int = 1):
            with open("first-{tag}.count", "a") as f:
                f.write("x")
            return n

        @task
        def second(first):
            if os.path.exists("fail-{tag}"):
                raise RuntimeError("asked to fail")
            return first + 1

    if __name__ == "__main__":
        params = {{"n": int(sys.argv[1])}} if len(sys.argv) > 1 else {{}}
        print(wf.plan(params))
        result = wf.run(params)
        print("RESULT", result.run_id, result.status.value, result.resumed)
''')


def _script(folder: Path, tag: str) -> Path:
    path = folder / f"{tag}.py"
    path.write_text(SCRIPT.format(tag=tag))
    return path


def _run(folder: Path, script: Path, *args: str) -> tuple[str, str, bool, str]:
    done = subprocess.run([sys.executable, str(script), *args], cwd=folder, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO})
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT"))
    _, run_id, status, resumed = line.split()
    return run_id, status, resumed == "True", done.stdout


def test_another_file_with_the_same_workflow_name_starts_fresh(tmp_path):
    a, b = _script(tmp_path, "a"), _script(tmp_path, "b")
    (tmp_path / "fail-a").touch()
    failed_a, status, _, _ = _run(tmp_path, a)
    assert status == "failed"
    run_b, status, resumed, out = _run(tmp_path, b)
    assert status == "succeeded" and not resumed and run_b != failed_a
    assert f"did not resume run {failed_a} (failed): it was defined in another file" in out
    (tmp_path / "fail-a").unlink()
    again, status, resumed, _ = _run(tmp_path, a)
    assert (again, status, resumed) == (failed_a, "succeeded", True)
    assert (tmp_path / "first-a.count").read_text() == "x"  # restored, not run again


def test_other_params_start_fresh_and_the_plan_says_which(tmp_path):
    a = _script(tmp_path, "a")
    (tmp_path / "fail-a").touch()
    failed, _, _, _ = _run(tmp_path, a, "1")
    (tmp_path / "fail-a").unlink()
    other, status, resumed, out = _run(tmp_path, a, "2")
    assert status == "succeeded" and not resumed and other != failed
    assert "it ran with other params ('n' differ)" in out
    same, status, resumed, _ = _run(tmp_path, a, "1")
    # the newest run with n=1 is the failed one: it resumes
    assert (same, status, resumed) == (failed, "succeeded", True)


SCHEDULED = textwrap.dedent('''
    import os, sys, time
    from datetime import datetime, timedelta, timezone
    from flowforge import Scheduler, task, workflow

    with workflow("nightly", executor="sequential", quiet=True, progress=False) as wf:
        @task
        def fetch(ctx):
            with open("fetch.log", "a") as f:
                f.write(ctx.scheduled_for.isoformat() + "\\n")
            return 1

        @task
        def slow(fetch, ctx):
            with open("slow.pid", "w") as f:
                f.write(str(os.getpid()))
            open("slow-started", "w").close()
            if not os.path.exists("release"):
                time.sleep(300)  # the first scheduler is killed here
            return ctx.scheduled_for.isoformat()

    # The first scheduler adds the job at 23:59 and runs the midnight fire at 00:01; the
    # second starts at 00:05, when no fire is due.
    now = [datetime(2029, 12, 31, 23, 59, tzinfo=timezone.utc)]
    if sys.argv[1] == "again":
        now[0] = datetime(2030, 1, 1, 0, 5, tzinfo=timezone.utc)
    sched = Scheduler("state", clock=lambda: now[0])
    isolate = sys.argv[3] == "isolate"  # each fire in a forked child
    if sys.argv[2] == "cron":
        sched.add(wf, cron="0 0 * * *", isolate=isolate)
    else:  # a one-time job
        sched.add(wf, at="2030-01-01T00:00:00+00:00", isolate=isolate)
    if sys.argv[1] == "first":
        now[0] = datetime(2030, 1, 1, 0, 1, tzinfo=timezone.utc)
    sched.run_pending()
    print("JOBS", [j.last_status for j in sched.jobs()])
''')


@pytest.mark.parametrize(("kind", "isolate"), [("cron", "thread"), ("at", "thread"),
                                               ("cron", "isolate")])
def test_a_fire_the_scheduler_died_running_resumes_when_it_starts_again(
    tmp_path, kind, isolate
):
    """kill -9 of the scheduler mid-fire: started again, it resumes that fire's run
    (fetch is restored, not fetched again) with the same ctx.scheduled_for, exactly
    once, also for a one-time (at=) job; the job table then says succeeded. An isolated
    fire's child dies with the scheduler (it would hold the run's lock)."""
    (tmp_path / "sched.py").write_text(SCHEDULED)
    env = {**os.environ, "PYTHONPATH": REPO}
    first = subprocess.Popen([sys.executable, "sched.py", "first", kind, isolate],
                             cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "slow-started").exists() or first.poll() is not None,
                   60, "the fire's slow task to start")
        assert first.poll() is None, first.communicate()
        runner = int((tmp_path / "slow.pid").read_text())
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        wait_until(lambda: not psutil.pid_exists(runner)
                   or psutil.Process(runner).status() == psutil.STATUS_ZOMBIE,
                   10, "the fire's process to end with the scheduler")
    finally:
        if first.poll() is None:
            first.kill()
    (tmp_path / "release").touch()
    again = subprocess.run([sys.executable, "sched.py", "again", kind, isolate],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "JOBS ['succeeded']" in again.stdout, again.stdout + again.stderr
    assert (tmp_path / "fetch.log").read_text() == "2030-01-01T00:00:00+00:00\n"
    runs = json.loads(subprocess.run(
        [sys.executable, "-m", "flowforge", "history", "--json"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=True).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    table = json.loads((tmp_path / "state" / "scheduler" / "jobs.json").read_text())
    assert table["nightly"]["last_status"] == "succeeded"
    third = subprocess.run([sys.executable, "sched.py", "again", kind, isolate],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "JOBS ['succeeded']" in third.stdout  # resumed once: nothing runs again
    assert (tmp_path / "fetch.log").read_text() == "2030-01-01T00:00:00+00:00\n"
