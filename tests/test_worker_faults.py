"""Worker faults (flowforge/executors/_deathwatch.py): a worker's death is seen by the
worker process itself, not its pipes, and the children a task started end with its
worker: on a crash, a timeout and when the run ends. Real processes throughout."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from flowforge import task, workflow
from flowforge.errors import WorkerCrashedError
from tests.waiting import wait_until


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _quiet(name: str, **kw: object):
    return workflow(name, executor="process", max_workers=1, autosave=False, log_dir=None,
                    quiet=True, progress=False, **kw)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_task_that_forks_and_dies_is_a_crash_at_once(tmp_path, timeout):
    """The worker forks, then dies; its child keeps the worker's pipes open. The crash is
    reported at once (not after the child ends, nor as a timeout), and the child ends."""
    marker = str(tmp_path / "child.pid")
    with _quiet("forky") as wf:
        @task(timeout=timeout)
        def fork_and_die():
            import os
            import time

            pid = os.fork()
            if pid == 0:
                time.sleep(120)
                os._exit(0)
            with open(marker, "w") as f:
                f.write(str(pid))
            os._exit(7)

    t0 = time.monotonic()
    result = wf.run()
    took = time.monotonic() - t0
    err = result.tasks["fork_and_die"].error
    assert isinstance(err, WorkerCrashedError), repr(err)
    assert err.exitcode == 7 and took < 15, (err, took)
    child = int(Path(marker).read_text())
    assert wait_until(lambda: not _alive(child), 10, "the forked child to end")


def _child_then(path: str, then: str) -> None:
    import os
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    with open(path, "w") as f:
        f.write(str(child.pid))
    if then == "crash":
        os._exit(3)
    if then == "hang":
        time.sleep(300)


@pytest.mark.parametrize(("then", "timeout"), [("crash", None), ("hang", 1.0),
                                               ("return", None)])
def test_a_tasks_children_end_with_its_worker(tmp_path, then, timeout):
    """A `sleep` the task started ends when its worker crashes, when the attempt times
    out, and when the run ends after the task returned."""
    marker = str(tmp_path / "child.pid")
    with _quiet("kids") as wf:
        @task(timeout=timeout)
        def spawn():
            _child_then(marker, then)
            return "done"

    result = wf.run()
    assert (result.tasks["spawn"].state.value == "succeeded") == (then == "return")
    child = int(Path(marker).read_text())
    assert wait_until(lambda: not _alive(child), 10, "the task's child to end")
