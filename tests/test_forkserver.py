"""The fork server (flowforge/_private/forkserver.py): process workers forked ready-made
by one server per driver, yet seeing the driver as a fresh worker would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import loky
import psutil
import pytest

from flowforge import ProcessExecutor, Task, Workflow
from flowforge._private import forkserver
from flowforge._private.remote import init_worker
from flowforge.errors import WorkerCrashedError
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux-only")

OPTS = {"log_dir": None, "quiet": True, "progress": False, "autosave": False}


def _describe(tag: str) -> dict[str, object]:
    print(f"printed by {tag}", flush=True)
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
    server = forkserver._server
    assert server is not None and server.usable()
    return server.pid


def test_workers_are_forked_by_the_server_with_the_drivers_current_state(
    tmp_path, monkeypatch, capfd
):
    """Workers are children of the fork server, not of the driver, yet they see the
    driver's environment, working folder and stdout as they are at this run, not as
    they were when the server started."""
    assert _run("warm", tag="warm-up").ok  # the server exists from here on
    server = _server_pid()
    monkeypatch.setenv("FLOWFORGE_TEST_TAG", "set after the server started")
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    result = _run("a", "b", tag="this run")
    assert result.ok, result.error
    for name in ("a", "b"):
        seen = result[name]
        assert seen["ppid"] == server and seen["pid"] != os.getpid()
        assert seen["tag"] == "set after the server started"
        assert seen["cwd"] == str(tmp_path)
    assert capfd.readouterr().out.count("printed by this run") == 2
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
    """kill -9 of the fork server: the workers it forked exit on their own, and the next
    run starts a new server."""
    assert _run("warm", tag="warm-up").ok
    old = _server_pid()
    ctx = forkserver.fork_server_context()
    assert ctx is not None
    pool = loky.ProcessPoolExecutor(1, context=ctx, initializer=init_worker,
                                    initargs=(os.getpid(), ctx.server_pid))
    try:
        worker = psutil.Process(pool.submit(os.getpid).result(timeout=60))
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not psutil.pid_exists(old) or
                   psutil.Process(old).status() == psutil.STATUS_ZOMBIE, 30, "the server to die")
        _, alive = psutil.wait_procs([worker], timeout=10)
        assert not alive, "a worker outlived its fork server"
    finally:
        pool.shutdown(wait=True, kill_workers=True)
    result = _run("a", tag="after")
    assert result.ok, result.error
    assert result["a"]["ppid"] == _server_pid() != old


def test_a_pool_whose_server_died_starts_its_worker_as_loky_does():
    """The server dies between making a pool's context and starting its worker: the
    worker starts as a fresh interpreter, a child of the driver, and works."""
    ctx = forkserver.fork_server_context()
    assert ctx is not None
    os.kill(ctx.server_pid, signal.SIGKILL)
    wait_until(lambda: forkserver._server is not None and not forkserver._server.usable(),
               30, "the server's death to be seen")
    pool = loky.ProcessPoolExecutor(1, context=ctx, initializer=init_worker,
                                    initargs=(os.getpid(), ctx.server_pid))
    try:
        assert pool.submit(os.getppid).result(timeout=60) == os.getpid()
    finally:
        pool.shutdown(wait=True)


def test_the_server_can_be_turned_off(monkeypatch):
    """FLOWFORGE_FORK_SERVER=0: every worker is a fresh interpreter started by the
    driver, as loky starts them."""
    monkeypatch.setenv(forkserver.ENV_SWITCH, "0")
    assert forkserver.fork_server_context() is None
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
