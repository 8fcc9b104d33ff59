"""Process workers forked by the standard library's fork server (through loky), yet
seeing the driver's environment as a freshly started worker would
(flowforge/_private/forkserver.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from multiprocessing import forkserver

import psutil
import pytest

from flowforge import Task, Workflow
from flowforge._private.forkserver import ENV_SWITCH as FORK_SERVER_SWITCH
from flowforge.errors import WorkerCrashedError
from flowforge.executors import ProcessExecutor
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux-only")

OPTS = {"log_dir": None, "quiet": True, "progress": False, "autosave": False}


def _describe(tag: str) -> dict[str, object]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
            "tag": os.environ.get("FLOWFORGE_TEST_TAG")}


def _kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)


def _run(*names: str, fn=_describe, **params: object):
    wf = Workflow("fs", executor=ProcessExecutor(2), params=params, **OPTS)
    for name in names:
        wf.add_task(Task(name, fn))
    return wf.run()


def _server_pid() -> int:
    pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert pid is not None and psutil.pid_exists(pid)
    return int(pid)


def test_workers_are_forked_by_the_server_with_the_drivers_current_state(
    tmp_path, monkeypatch
):
    """Workers are children of the fork server, not of the driver, yet they see the
    driver's environment and working folder as they are at this run, not as they were
    when the server started."""
    assert _run("warm", tag="warm-up").ok  # the server exists from here on
    server = _server_pid()
    monkeypatch.setenv("FLOWFORGE_TEST_TAG", "set after the server started")
    monkeypatch.chdir(tmp_path)
    result = _run("a", "b", tag="this run")
    assert result.ok, result.error
    for name in ("a", "b"):
        seen = result[name]
        assert seen["ppid"] == server and seen["pid"] != os.getpid()
        assert seen["tag"] == "set after the server started"
        assert seen["cwd"] == str(tmp_path)
    assert _server_pid() == server  # the same server serves every run


def test_a_worker_killed_by_a_signal_is_reported_with_that_signal():
    """The server reaps its workers and hands their exit status to the driver: a worker
    killed by SIGKILL fails its task naming SIGKILL, as a child of the driver would."""
    result = _run("dies", fn=_kill_self, sig=int(signal.SIGKILL))
    error = result.tasks["dies"].error
    assert isinstance(error, WorkerCrashedError), error
    assert error.signal == "SIGKILL" and error.exitcode == -signal.SIGKILL
    assert "killed by signal SIGKILL" in str(error)


def test_a_dead_server_is_replaced_and_its_workers_go_with_it():
    """kill -9 of the fork server while a run's worker waits: that worker exits on its
    own, its task fails as a crash, and the next run starts a new server."""
    assert _run("warm", tag="warm-up").ok
    old = _server_pid()
    wf = Workflow("fs", executor=ProcessExecutor(1), **OPTS)
    wf.add_task(Task("slow", _sleep_then_pid))
    import threading

    results: list[object] = []
    runner = threading.Thread(target=lambda: results.append(wf.run()))
    runner.start()
    wait_until(lambda: len(psutil.Process(old).children()) >= 1, 30, "the worker")
    worker = psutil.Process(old).children()[0]
    os.kill(old, signal.SIGKILL)
    _, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive, "a worker outlived its fork server"
    runner.join(timeout=60)
    assert results and isinstance(results[0].tasks["slow"].error, WorkerCrashedError)  # type: ignore[attr-defined]
    result = _run("a", tag="after")
    assert result.ok, result.error
    assert result["a"]["ppid"] == _server_pid() != old


def _sleep_then_pid() -> int:
    import time

    time.sleep(30)
    return os.getpid()


def test_the_server_can_be_turned_off(monkeypatch):
    """FLOWFORGE_FORK_SERVER=0: every worker is a fresh interpreter started by the
    driver, as loky starts them."""
    monkeypatch.setenv(FORK_SERVER_SWITCH, "0")
    result = _run("a", tag="off")
    assert result.ok, result.error
    assert result["a"]["ppid"] == os.getpid()


DRIVER = textwrap.dedent(
    """
    import os, time
    from flowforge import workflow, task

    with workflow("orphan", executor="process", max_workers=1, log_dir=None, quiet=True) as wf:
        @task
        def a():
            print(os.getpid(), os.getppid(), flush=True)
            time.sleep(60)

    wf.run()
    """
)


def test_the_server_and_its_workers_stop_when_the_driver_is_killed(tmp_path):
    """kill -9 of the driver: its fork server and the worker it forked exit within a few
    seconds, leaving nothing behind."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stdout is not None
    worker_pid, server_pid = map(int, proc.stdout.readline().split())
    assert server_pid != proc.pid, "the worker was not forked by a fork server"
    watched = [psutil.Process(worker_pid), psutil.Process(server_pid)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(watched, timeout=10)
    assert not alive


def _worker_settings() -> dict[str, object]:
    import loky.process_executor as loky_executor

    return {"ppid": os.getppid(),
            "leak": loky_executor._MAX_MEMORY_LEAK_SIZE,  # type: ignore[attr-defined]
            "big": len(os.environ.get("FLOWFORGE_TEST_BIG", ""))}


def test_workers_take_the_drivers_environment_and_loky_settings(monkeypatch):
    """A forked worker takes the driver's environment as it starts (a large one too) and
    loky's settings that a fresh one reads from it at import (a slot's workers must never
    be swapped for memory growth)."""
    assert _run("warm", tag="warm-up").ok
    monkeypatch.setenv("FLOWFORGE_TEST_BIG", "x" * 400_000)
    result = _run("a", fn=_worker_settings)
    assert result.ok, result.error
    seen = result["a"]
    assert seen["ppid"] == _server_pid()
    assert seen["big"] == 400_000
    assert seen["leak"] == 10**18


BLOCKED = textwrap.dedent(
    """
    import os, signal
    from flowforge import Task, Workflow

    def where():
        return os.getppid()

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # as sigwait users do
    os.close(1)  # and a data file then lands on number 1: no worker may write into it
    data = os.open("data.txt", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    assert data == 1
    for _ in range(2):
        wf = Workflow("b", executor="process", max_workers=1, log_dir=None, quiet=True,
                      progress=False, autosave=False)
        wf.add_task(Task("where", where))
        wf.add_task(Task("talk", lambda: print("task output", flush=True)))
        result = wf.run()
        assert result.ok, result.error
        assert result["where"] != os.getpid(), "not forked by the server"
    os.write(2, b"done")
    """
)


def test_a_driver_blocking_sigchld_with_its_stdout_closed(tmp_path):
    """A driver thread that blocks SIGCHLD starts the server (which must still reap its
    workers), and a file the driver opened on number 1 after closing stdout is not the
    workers' stdout: runs finish and the file stays empty."""
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.endswith("done"), proc.stderr
    assert (tmp_path / "data.txt").read_text() == ""
