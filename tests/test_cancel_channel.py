"""`flowforge cancel` through the run's cancel channel (flowforge/persistence/cancelling.py):
it reaches runs that a SIGINT could not (a run in a non-main thread, a process that
ignores SIGINT, a run inside the scheduler), waits until the run reports cancelled, and
says who asked. Every case runs real processes and the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.waiting import wait_until

REPO = str(Path(__file__).resolve().parents[1])

#: A script whose task signals it started, then blocks in time.sleep (C code): only a
#: real interruption or abandoning the attempt ends the run early.
SCRIPT = textwrap.dedent('''
    import os, signal, subprocess, sys, threading, time
    from flowforge import task, workflow

    MODE = sys.argv[1]
    EXECUTOR = sys.argv[2]

    with workflow("sleepy", executor=EXECUTOR, quiet=True, progress=False) as wf:
        @task(retries=1, retry_delay=300)
        def nap():
            if MODE == "retry":
                open("started", "w").close()
                raise RuntimeError("fails, then waits 300 s for its retry")
            if MODE == "child":
                child = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                open("child.pid", "w").write(str(child.pid))
            open("started", "w").close()
            time.sleep(300)
            return "woke"

    def run():
        result = wf.run()
        with open("outcome", "w") as f:
            f.write(result.status.value)

    if MODE == "thread":  # the host's main thread must not notice the cancel
        t = threading.Thread(target=run)
        t.start()
        t.join()
        print("main thread untouched")
    else:
        if MODE == "ignore":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        run()
''')


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": REPO}


def _start(tmp_path: Path, mode: str, executor: str) -> subprocess.Popen[str]:
    (tmp_path / "sleepy.py").write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, "sleepy.py", mode, executor], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: (tmp_path / "started").exists() or proc.poll() is not None,
                   60, "the task to start")
        assert proc.poll() is None, proc.communicate()
    except BaseException:
        proc.kill()
        raise
    return proc


def _flowforge(tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowforge", *args], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def _run_id(tmp_path: Path) -> str:
    runs = json.loads(_flowforge(tmp_path, "history", "--json").stdout)
    return str(runs[0]["run_id"])


def _log_reasons(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "logs" / "workflow.log").read_text().splitlines()
    return [json.loads(line).get("reason", "") for line in lines
            if json.loads(line).get("event") == "workflow_finished"]


@pytest.mark.parametrize(("mode", "executor"), [
    ("main", "sequential"),    # the attempt runs in the main thread: interrupted
    ("thread", "sequential"),  # a run in a non-main thread: its attempt is abandoned
    ("ignore", "sequential"),  # SIGINT ignored: a signal could not have done it
    ("main", "thread"),
    ("thread", "process"),     # the worker is killed
    ("retry", "sequential"),   # the run waits out a retry delay: woken at once
])
def test_cancel_reaches_the_run_waits_for_it_and_names_who_asked(tmp_path, mode, executor):
    proc = _start(tmp_path, mode, executor)
    try:
        run_id = _run_id(tmp_path)
        t0 = time.monotonic()
        cancel = _flowforge(tmp_path, "cancel", run_id)
        took = time.monotonic() - t0
        assert cancel.returncode == 0, cancel.stderr
        assert f"run {run_id} cancelled" in cancel.stdout
        assert took < 5 + 3, f"cancel took {took:.1f}s"  # 5 s promised, 3 s to start Python
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "outcome").read_text() == "cancelled", err
    if mode == "thread":
        assert "main thread untouched" in out and "KeyboardInterrupt" not in err
    status = json.loads(_flowforge(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "cancelled"
    (reason,) = _log_reasons(tmp_path)
    assert reason.startswith("cancelled from the command line (pid "), reason


def test_force_ends_the_child_process_a_task_in_the_driver_started(tmp_path):
    """--force: the `sleep` a thread-executor task started ends with the run."""
    proc = _start(tmp_path, "child", "thread")
    child = int(wait_until(lambda: (tmp_path / "child.pid").exists()
                           and (tmp_path / "child.pid").read_text(), 30, "the child's pid"))
    try:
        cancel = _flowforge(tmp_path, "cancel", _run_id(tmp_path), "--force")
        assert cancel.returncode == 0, cancel.stderr
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until(lambda: not _alive(child), 10, "the task's child to end")


def test_force_ends_a_process_workers_child_too(tmp_path):
    """--force: the `sleep` a process-executor task started ends with its worker."""
    proc = _start(tmp_path, "child", "process")
    child = int(wait_until(lambda: (tmp_path / "child.pid").exists()
                           and (tmp_path / "child.pid").read_text(), 30, "the child's pid"))
    try:
        assert _flowforge(tmp_path, "cancel", _run_id(tmp_path), "--force").returncode == 0
        proc.communicate(timeout=30)
        assert wait_until(lambda: not _alive(child), 10, "the child to end")
    finally:
        if proc.poll() is None:
            proc.kill()
        if _alive(child):
            psutil.Process(child).kill()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_no_wait_returns_at_once_and_a_finished_run_is_exit_1(tmp_path):
    proc = _start(tmp_path, "main", "thread")
    try:
        run_id = _run_id(tmp_path)
        asked = _flowforge(tmp_path, "cancel", run_id, "--no-wait")
        assert asked.returncode == 0 and "asked run" in asked.stdout
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "outcome").read_text() == "cancelled"
    again = _flowforge(tmp_path, "cancel", run_id)
    assert again.returncode == 1
    assert f"run {run_id} is not running (it is cancelled)" in again.stderr
    unknown = _flowforge(tmp_path, "cancel", "no-such-run")
    assert unknown.returncode == 2 and "no saved run 'no-such-run'" in unknown.stderr


SCHEDULED = textwrap.dedent('''
    import os, sys, time
    from datetime import datetime, timedelta, timezone
    from flowforge import Scheduler, task, workflow

    with workflow("nightly", executor="sequential", quiet=True, progress=False) as wf:
        @task
        def job():
            n = len(os.listdir("fires"))
            open(os.path.join("fires", str(n)), "w").close()
            if n == 0:  # the first fire waits to be cancelled
                time.sleep(300)
            return n

    os.makedirs("fires", exist_ok=True)
    # One scheduled minute passes every real second, so the job fires about every second.
    t0 = time.time()
    base = datetime(2030, 1, 1, 0, 0, 55, tzinfo=timezone.utc)
    sched = Scheduler("state", clock=lambda: base + timedelta(minutes=time.time() - t0))
    sched.add(wf, cron="* * * * *", overlap="skip")
    while len(os.listdir("fires")) < 2:
        sched.run_pending()
        time.sleep(0.05)
    print("the scheduler fired again")
''')


def test_cancelling_a_scheduled_run_leaves_the_scheduler_running(tmp_path):
    """The run inside the scheduler ends cancelled; the scheduler process is untouched
    and fires the job again at its next time."""
    (tmp_path / "sched.py").write_text(SCHEDULED)
    proc = subprocess.Popen([sys.executable, "sched.py"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "fires" / "0").exists() or proc.poll() is not None,
                   60, "the first fire")
        cancel = _flowforge(tmp_path, "cancel", _run_id(tmp_path))
        assert cancel.returncode == 0, cancel.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "the scheduler fired again" in out
