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

from flowforge import Task, Workflow
from flowforge._private import forkserver
from flowforge._private.remote import init_worker
from flowforge.errors import WorkerCrashedError
from flowforge.executors import ProcessExecutor
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


def _worker_settings() -> dict[str, object]:
    import loky.process_executor as loky_executor

    with open("/proc/self/status") as status:
        umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    return {"ppid": os.getppid(), "umask": umask,
            "leak": loky_executor._MAX_MEMORY_LEAK_SIZE,  # type: ignore[attr-defined]
            "big": len(os.environ.get("FLOWFORGE_TEST_BIG", ""))}


def test_workers_take_the_drivers_umask_environment_and_loky_settings(monkeypatch):
    """State a fresh worker would take from the driver at its start, a forked one gets
    too: a umask set after the server started, an environment too large for one socket
    message, and loky's settings read from the environment at import (a slot's workers
    must never be swapped for memory growth)."""
    assert _run("warm", tag="warm-up").ok
    monkeypatch.setenv("FLOWFORGE_TEST_BIG", "x" * 400_000)
    old = os.umask(0o077)
    try:
        result = _run("a", fn=_worker_settings)
    finally:
        os.umask(old)
    assert result.ok, result.error
    seen = result["a"]
    assert seen["ppid"] == _server_pid()
    assert seen["umask"] == 0o077
    assert seen["big"] == 400_000
    assert seen["leak"] == 10**18


def test_exit_codes_are_read_once_whatever_thread_polls():
    """Every thread polling a dead worker at once sees its real exit code: the status
    pipe is read and closed exactly once."""
    import threading

    ctx = forkserver.fork_server_context()
    assert ctx is not None
    for _ in range(5):
        proc = ctx.Process(target=os._exit, args=(7,))
        proc.start()
        wait_until(lambda: not proc.is_alive(), 30, "the worker to exit")  # noqa: B023
        seen: list[object] = []
        threads = [threading.Thread(target=lambda: seen.append(proc._popen.poll(0)))  # noqa: B023
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [7] * 8


def test_many_open_files_do_not_break_the_server():
    """With the driver's file numbers past 1024 (select()'s limit), workers still start
    and report their exit codes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip("needs a file limit of 1300")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    assert _run("warm", tag="warm-up").ok
    os.kill(_server_pid(), signal.SIGKILL)  # the next server starts with high numbers
    wait_until(lambda: not forkserver._server.usable(), 30, "the server's death")  # type: ignore[union-attr]
    files = [open(os.devnull) for _ in range(1100)]  # noqa: SIM115
    try:
        many = _run("a", tag="many files")
        assert many.ok and many["a"]["ppid"] == _server_pid(), "not forked by the server"
        result = _run("dies", fn=_kill_self, sig=int(signal.SIGKILL))
        assert result.tasks["dies"].error.signal == "SIGKILL"  # type: ignore[union-attr]
        ctx = forkserver.fork_server_context()
        assert ctx is not None
        proc = ctx.Process(target=_kill_self, args=(int(signal.SIGTERM),))
        proc.start()
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGTERM
        assert proc._popen.poll() == -signal.SIGTERM  # type: ignore[union-attr]
    finally:
        for f in files:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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


def test_is_alive_answers_while_another_thread_joins():
    """A thread waiting for a worker to exit (join) does not keep another thread's
    is_alive() (or any Process.start(), which polls every child) waiting."""
    import threading
    import time

    ctx = forkserver.fork_server_context()
    assert ctx is not None
    proc = ctx.Process(target=time.sleep, args=(2,))
    proc.start()
    joiner = threading.Thread(target=proc.join)
    joiner.start()
    time.sleep(0.2)  # the joiner is waiting by now (and if not, the test proves less)
    start = time.monotonic()
    assert proc.is_alive()
    assert time.monotonic() - start < 1.0
    joiner.join(timeout=30)
    assert proc.exitcode == 0


def _wait_for_file(path: str) -> int:
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getppid()


def test_changed_interpreter_settings_get_a_new_server_and_spare_running_workers(
    tmp_path, monkeypatch
):
    """PYTHONHASHSEED changes while a run's worker is busy: the next run gets workers
    from a server started under the new setting, and the busy one finishes its task."""
    import threading

    assert _run("warm", tag="warm-up").ok
    old = _server_pid()
    gate = tmp_path / "gate"
    first: list[object] = []
    runner = threading.Thread(target=lambda: first.append(
        _run("busy", fn=_wait_for_file, path=str(gate))))
    runner.start()
    wait_until(lambda: len(psutil.Process(old).children()) >= 1, 30, "the busy worker")
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    second = _run("a", tag="new settings")
    gate.touch()
    runner.join(timeout=60)
    assert second.ok and second["a"]["ppid"] != old
    assert first and first[0].ok, first and first[0].error  # type: ignore[attr-defined]
    assert first[0]["busy"] == old  # type: ignore[index]
