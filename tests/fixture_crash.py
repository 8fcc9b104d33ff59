"""A 50-task workflow for the crash tests (tests/test_crash.py), importable so process
workers can unpickle its tasks, and the driver the tests run in a subprocess and kill.

The DAG is eight layers (2, 6, 8, 10, 10, 8, 5, 1 tasks); each task below the first
takes two or three tasks of the layer above (fan-in and fan-out). A task's result is a
deterministic function of its name and its inputs, so any complete run has the same
results. When a task starts it appends ``"<phase> <task>\\n"`` to the file named by
``FF_CRASH_LOG`` (one ``write()`` on an ``O_APPEND`` file, so lines from threads and
processes never interleave), with the phase from ``FF_CRASH_PHASE``; then it sleeps
``FF_CRASH_SLEEP`` seconds (default 0.01) so a kill lands mid-run.

Driver: ``python -c "from tests.fixture_crash import main; main()" STATE_DIR EXECUTOR
STORE OUT_JSON`` runs the workflow and writes its status, run id, ``resumed`` and
results to ``OUT_JSON``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

from flowforge import Task, Workflow

WORKFLOW = "crash"
LAYERS = (2, 6, 8, 10, 10, 8, 5, 1)
MODULUS = (1 << 61) - 1


def layout() -> dict[str, tuple[str, ...]]:
    """Task name -> its upstream task names, in topological order (50 tasks)."""
    graph: dict[str, tuple[str, ...]] = {}
    previous: list[str] = []
    for i, size in enumerate(LAYERS):
        names = [f"L{i}_{j}" for j in range(size)]
        for j, name in enumerate(names):
            if not previous:
                graph[name] = ()
                continue
            n = len(previous)
            picks = {j % n, (3 * j + 1) % n}
            if j % 3 == 0:
                picks.add((j + n // 2) % n)
            graph[name] = tuple(previous[p] for p in sorted(picks))
        previous = names
    return graph


def compute(name: str, inputs: dict[str, int]) -> int:
    """The value task ``name`` returns for ``inputs`` (pure)."""
    value = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")
    for k, up in enumerate(sorted(inputs)):
        value = (value * 31 + (k + 1) * inputs[up]) % MODULUS
    return value


def expected() -> dict[str, int]:
    """Every task's result, computed without FlowForge."""
    out: dict[str, int] = {}
    for name, ups in layout().items():
        out[name] = compute(name, {u: out[u] for u in ups})
    return out


class Step(Task):
    """One task of the crash workflow: log the start, wait a little, compute."""

    def run(self, **inputs: Any) -> int:
        line = f"{os.environ.get('FF_CRASH_PHASE', '?')} {self.name}\n".encode()
        fd = os.open(os.environ["FF_CRASH_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        time.sleep(float(os.environ.get("FF_CRASH_SLEEP", "0.01")))
        return compute(self.name, inputs)


def build(state_dir: str, executor: str, store: str) -> Workflow:
    """The crash workflow, saving its state in ``state_dir`` with ``store``."""
    wf = Workflow(
        WORKFLOW,
        executor=executor,
        max_workers=None if executor == "sequential" else 2,
        state_dir=state_dir,
        state_store=store,
        log_dir=None,
        quiet=True,
        progress=False,
    )
    for name, ups in layout().items():
        wf.add_task(Step(name, depends_on=ups))
    return wf


def main(argv: list[str] | None = None) -> None:
    state_dir, executor, store, out = sys.argv[1:] if argv is None else argv
    result = build(state_dir, executor, store).run()
    report = {
        "status": str(result.status),
        "run_id": result.run_id,
        "resumed": result.resumed,
        "results": dict(result.results),
        "error": None if result.error is None else repr(result.error),
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, out)
