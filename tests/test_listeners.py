"""Logging from process workers, the progress line, and workers outliving a killed driver."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil

from flowforge import task, workflow
from flowforge._private.console import Console
from flowforge.listeners.progress import ProgressListener


def test_ctx_log_from_process_workers_reaches_the_file(tmp_path):
    """ctx.log lines written in process workers land in workflow.log with task fields."""
    with workflow("w", executor="process", max_workers=2, log_dir=str(tmp_path),
                  quiet=True) as wf:

        @task
        def a(ctx):
            ctx.log.info("from worker", pid=os.getpid())
            return os.getpid()

    result = wf.run()
    lines = [json.loads(x) for x in (tmp_path / "workflow.log").read_text().splitlines()]
    mine = [x for x in lines if x["event"] == "from worker"]
    assert len(mine) == 1
    assert mine[0]["pid"] == result["a"] != os.getpid()
    assert (mine[0]["task"], mine[0]["run_id"], mine[0]["attempt"]) == ("a", result.run_id, 1)


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_tty():
    """On a TTY the progress line shows done/total, running and failed, then clears."""
    stream = _FakeTTY()
    with workflow("w", executor="sequential", log_dir=None, quiet=True) as wf:

        @task
        def a():
            return 1

        @task
        def b(a):
            return 2

    listener = ProgressListener(2, Console(stream), min_interval=0)
    off = listener.attach(wf.events)
    wf.run()
    off()
    out = stream.getvalue()
    assert "1/2 done" in out and "2/2 done, 0 running" in out
    assert out.endswith("\r\x1b[2K")


def test_no_progress_off_a_tty():
    """Off a TTY the console writes no status line at all."""
    stream = io.StringIO()
    Console(stream).status("[w] 1/2 done")
    assert stream.getvalue() == ""


DRIVER = textwrap.dedent(
    """
    import os, time
    from flowforge import workflow, task

    with workflow("orphan", executor="process", max_workers=2, log_dir=None, quiet=True) as wf:
        @task
        def a():
            print(os.getpid(), flush=True)
            time.sleep(60)

    wf.run()
    """
)


def test_workers_stop_when_driver_is_killed(tmp_path):
    """kill -9 of the driver: its workers exit within a few seconds."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stdout is not None
    worker_pid = int(proc.stdout.readline())
    worker = psutil.Process(worker_pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive


def test_progress_counts_tasks_not_map_items_or_subflow_tasks():
    """Item events (index set) and a subflow's inner tasks do not move the progress bar."""
    from flowforge.events import TaskStarted, TaskSucceeded
    from flowforge.listeners.progress import ProgressListener

    class Screen:
        def status(self, text):
            self.text = text

    bar = ProgressListener(2, Screen(), min_interval=0, tasks=["src", "m"])
    base = {"workflow": "w", "run_id": "r", "timestamp": 0.0}
    for event in [
        TaskStarted(task="m", attempt=1, **base),
        *(TaskSucceeded(task="m", attempt=1, duration=0.0, index=i, **base) for i in range(10)),
        TaskSucceeded(task="sub.inner", attempt=1, duration=0.0, **base),
        TaskSucceeded(task="m", attempt=1, duration=0.0, **base),
    ]:
        bar.handle(event)
    assert (bar.done, bar.running) == (1, 0)
