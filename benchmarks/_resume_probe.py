"""A user's script, run by ``benchmarks.persistence`` in a new process: a 100-task chain.

Usage: ``python benchmarks/_resume_probe.py MODE`` in the folder it should use (``state/``
and ``logs/`` land there: the defaults a user has). MODE is

* ``kill``: the first run; task ``t50`` kills the process with SIGKILL (marker absent);
* ``resume``: the same workflow again, which resumes the killed run;
* ``fresh``: the same workflow with ``run(fresh=True)``;
* ``fresh-nosave``: the same workflow with ``autosave=False``.

The first task that executes in this process writes, as JSON to ``FF_BENCH_STAMP``, the
``time.time()`` at which it started, with the times the script started, finished its
imports, built the workflow and called ``run()``. Kept free of imports beyond what a user
script has, so the timings are what a user would see.
"""

import time

_T_SCRIPT = time.time()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from flowforge import Task, Workflow  # noqa: E402

_T_IMPORTED = time.time()

N_TASKS = 100
KILL_AT = 50
_STAMPS: dict[str, float] = {"script": _T_SCRIPT, "imported": _T_IMPORTED}
_seen: list[float] = []


def _first_task() -> None:
    if _seen:
        return
    now = time.time()
    _seen.append(now)
    with open(os.environ["FF_BENCH_STAMP"], "w") as f:
        json.dump({**_STAMPS, "first_task": now}, f)


def step(**inputs: object) -> int:
    _first_task()
    return 1


def crash_once(**inputs: object) -> int:
    """Task t50: dies the first time (no marker yet), then works like ``step``."""
    marker = os.environ["FF_BENCH_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    _first_task()
    return 1


def main(mode: str) -> None:
    autosave = mode != "fresh-nosave"
    wf = Workflow("resume-probe", quiet=True, autosave=autosave)
    for i in range(N_TASKS):
        fn = crash_once if i == KILL_AT else step
        wf.add_task(Task(f"t{i}", fn, depends_on=[f"t{i - 1}"] if i else []))
    _STAMPS["built"] = time.time()
    _STAMPS["run_called"] = time.time()
    result = wf.run(fresh=mode == "fresh")
    if not result.ok:
        sys.exit(f"run did not succeed: {result.status}")
    restored = sum(1 for r in result.tasks.values() if r.restored)
    expected = KILL_AT if mode == "resume" else 0
    if restored != expected or result.resumed != (mode == "resume"):
        sys.exit(
            f"{mode}: restored {restored} tasks (resumed={result.resumed}), expected {expected}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
