"""Ctrl-C during run(): tasks stopped, result cancelled, clean exit, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from flowforge import workflow, task

    with workflow("sig", executor=sys.argv[1], max_workers=2, log_dir=None, quiet=True) as wf:
        @task
        def a():
            time.sleep(60)

        @task
        def b():
            time.sleep(60)

    def ready(event):
        print("started", flush=True)

    from flowforge.events import TaskStarted
    wf.events.subscribe(TaskStarted, ready)
    result = wf.run()
    print("status", result.status, flush=True)
    """
)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_sigint_cancels_cleanly(executor, tmp_path):
    """SIGINT makes run() return 'cancelled'; the script exits 0 with no traceback."""
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), executor], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.5 if executor == "thread" else 1.0)  # let the second task start too
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "status cancelled" in out
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


PACKING = textwrap.dedent(
    """
    import sys, time, traceback
    from flowforge import workflow, task

    class Slow:
        \"\"\"Pickles slowly when the process executor packs an attempt's inputs.\"\"\"

        def __reduce__(self):
            if any(f.name == "_pack" for f in traceback.extract_stack()):
                print("packing", flush=True)
                # Busy, as pickling is: a SIGINT that lands on another thread does not
                # cut a time.sleep() of the main thread short (a CPython limitation).
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    pass
            return (Slow, ())

    with workflow("sig", executor="process", max_workers=2, log_dir=None, quiet=True,
                  autosave=False) as wf:
        @task
        def a():
            time.sleep(60)

        @task
        def b(blob):
            return "used"

    result = wf.run(params={"blob": Slow()})
    print("status", result.status, "b", result.tasks["b"].state.value, flush=True)
    """
)


def test_sigint_while_an_attempt_is_packed_cancels_the_run(tmp_path):
    """A Ctrl-C that lands while the driver pickles an attempt's inputs stops the run
    ('cancelled', exit 0, workers gone) instead of failing that one attempt."""
    script = tmp_path / "s.py"
    script.write_text(PACKING)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "packing"
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=50)  # task a alone would take 60 s
    assert proc.returncode == 0, err
    assert "status cancelled b cancelled" in out, out
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
