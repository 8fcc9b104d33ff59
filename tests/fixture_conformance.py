"""Helpers for the executor conformance suite (tests/test_conformance.py): importable,
so process and Dask workers unpickle them by reference, and a driver the suite runs in a
subprocess, then kills (SIGKILL) or interrupts (SIGINT).

State that must be seen across processes lives in files under the test's tmp folder,
never in globals: ``bump`` appends one byte per call to a file and returns the count,
``hold`` blocks until a gate file exists (polling, so an abandoned attempt ends as soon as
the test opens the gate).

Driver: ``python -m tests.fixture_conformance MODE TMP EXECUTOR [ADDRESS]``

* ``MODE=kill``: ``first`` appends a line to ``TMP/first`` and returns 20, then
  ``block(first)`` touches ``TMP/blocking`` and waits for ``TMP/gate``; the state folder
  is ``TMP/state``. The test kills the driver while ``block`` waits, then runs
  :func:`build_kill` again itself and expects ``first`` restored, not run again.
* ``MODE=cancel``: ``long`` touches ``TMP/started`` and waits for ``TMP/gate``;
  ``after(long)`` would follow. The driver prints ``status <run> long <state> after
  <state>`` when ``run()`` returns.

``EXECUTOR`` is ``sequential``, ``thread`` or ``process``, or ``dask`` with the
scheduler ``ADDRESS`` of a running cluster (left running).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from flowforge import Workflow, task, workflow

#: Longest a held attempt waits for its gate: a test that forgets the gate costs this.
HOLD_LIMIT = 60.0


def bump(path: str) -> int:
    """Append one byte to ``path``; the number of calls so far (this one included)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        return len(f.read())


def count(path: str) -> int:
    """How many times :func:`bump` was called on ``path`` (0 if never)."""
    try:
        with open(path, "rb") as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def touch(path: str) -> None:
    """Create ``path`` (empty) if it does not exist."""
    open(path, "a").close()


def hold(gate: str, limit: float = HOLD_LIMIT) -> bool:
    """Wait until ``gate`` exists (True) or ``limit`` seconds pass (False), in short
    sleeps, so a thread or worker left running ends soon after the gate opens."""
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def answer() -> int:
    """A coroutine function a plain task may call and forget to await."""
    return 42


def executor_for(name: str, address: str | None = None) -> Any:
    """What ``workflow(executor=...)`` takes for ``name`` (a Dask one needs ``address``)."""
    if name != "dask":
        return name
    from flowforge import DaskExecutor

    return DaskExecutor(address=address)


def build_kill(tmp: str, executor: Any) -> Workflow:
    """The kill-and-resume workflow (see the module docstring)."""
    with workflow("conformance-kill", executor=executor, max_workers=2,
                  state_dir=os.path.join(tmp, "state"), log_dir=None, quiet=True,
                  progress=False) as wf:

        @task
        def first():
            with open(os.path.join(tmp, "first"), "a") as f:
                f.write("ran\n")
            return 20

        @task
        def block(first):
            touch(os.path.join(tmp, "blocking"))
            hold(os.path.join(tmp, "gate"))
            return first + 22

    return wf


def build_cancel(tmp: str, executor: Any) -> Workflow:
    """The Ctrl-C workflow (see the module docstring)."""
    with workflow("conformance-cancel", executor=executor, max_workers=2, autosave=False,
                  log_dir=None, quiet=True, progress=False) as wf:

        @task
        def long():
            touch(os.path.join(tmp, "started"))
            hold(os.path.join(tmp, "gate"))
            return 1

        @task
        def after(long):
            return long + 1

    return wf


def main(argv: list[str]) -> None:
    mode, tmp, name, *rest = argv
    executor = executor_for(name, rest[0] if rest else None)
    if mode == "kill":
        result = build_kill(tmp, executor).run()
        print("status", result.status.value, flush=True)
    elif mode == "cancel":
        # Ctrl-C raises KeyboardInterrupt even if whoever started us ignored SIGINT (a
        # background job of a shell without job control inherits SIG_IGN).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        result = build_cancel(tmp, executor).run()
        print("status", result.status.value, "long", result.tasks["long"].state.value,
              "after", result.tasks["after"].state.value, flush=True)
    else:
        msg = f"unknown mode {mode!r}; use 'kill' or 'cancel'"
        raise SystemExit(msg)


if __name__ == "__main__":
    main(sys.argv[1:])
