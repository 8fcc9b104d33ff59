"""Crash tests: SIGKILL a run at random points, run it again, and check that it resumes.

Each case runs the 50-task workflow of :mod:`tests.fixture_crash` in a subprocess (phase
1), kills it with SIGKILL from outside, reads what the state folder says succeeded, then
runs the same workflow to completion (phase 2). It pins that the results equal an
uninterrupted run's, that no task saved as succeeded runs again, that only the tasks
running at the instant of the kill (at most ``max_workers``) run twice, and that the
killed run is resumed rather than restarted.

Kill points: after the k-th task has started (k drawn in strata over 1..49, so early,
middle and late kills all occur); a random moment after the state folder appears (while
the lock, key, run summary and journal are created, and process workers start); and a
random delay after launch (imports, opening the state, the first tasks). A second test
kills the resumed run as well. The draws come from a seeded generator: set
``FLOWFORGE_CRASH_SEED`` to explore other kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flowforge import PersistenceManager, TaskState
from tests.fixture_crash import WORKFLOW, expected, layout

REPO = Path(__file__).resolve().parent.parent
DRIVER = "from tests.fixture_crash import main; main()"
SEED = int(os.environ.get("FLOWFORGE_CRASH_SEED", "20240611"))
TOTAL = len(layout())
WORKERS = {"sequential": 1, "thread": 2, "process": 2}
STORES = ("files", "sqlite")
#: Kills after the k-th task start, per store; process runs are slower, so fewer.
LINE_KILLS = {"sequential": 4, "thread": 4, "process": 3}
#: How long after the state folder appears a "state" kill may come: the time it takes to
#: open the state (about 40 ms), and for process runs to start the workers too.
STATE_WINDOW = {"sequential": 0.05, "thread": 0.05, "process": 0.35}
DEADLINE = 60.0  # seconds any one wait may take before the test fails


def _kill_points(rng: random.Random, n: int, last: int = TOTAL - 1) -> list[tuple[str, float]]:
    """``n`` kills after the k-th task start, k spread over 1..``last`` (the run must not
    be able to finish before the kill)."""
    return [("lines", rng.randint(1 + last * i // n, last * (i + 1) // n)) for i in range(n)]


def _cases() -> list[pytest.ParameterSet]:
    cases = []
    for ex in WORKERS:
        for st in STORES:
            rng = random.Random(f"{SEED}/{ex}/{st}")
            points = _kill_points(rng, LINE_KILLS[ex])
            points.append(("state", round(rng.uniform(0.0, STATE_WINDOW[ex]), 3)))
            if ex != "process":
                points.append(("delay", round(rng.uniform(0.0, 0.3), 3)))
            cases += [
                pytest.param(ex, st, mode, at, id=f"{ex}-{st}-{mode}{at:g}")
                for mode, at in points
            ]
    return cases


def _twice() -> list[pytest.ParameterSet]:
    cases = []
    for ex, st in (("sequential", "sqlite"), ("thread", "files"), ("process", "sqlite")):
        rng = random.Random(f"{SEED}/twice/{ex}/{st}")
        # the second kill comes after a share of the tasks left to the resumed run
        kills = [*_kill_points(rng, 1, TOTAL // 2), ("share", round(rng.uniform(0, 1), 2))]
        cases.append(
            pytest.param(ex, st, kills, id=f"{ex}-{st}-" + "-".join(f"{m}{a}" for m, a in kills))
        )
    return cases


# -- running the driver ----------------------------------------------------------------


class Driver:
    """One subprocess running the crash workflow on ``tmp``'s state folder."""

    def __init__(self, tmp: Path, executor: str, store: str, phase: int) -> None:
        self.tmp = tmp
        self.phase = phase
        self.log = tmp / "tasks.log"
        self.out = tmp / f"result{phase}.json"
        self.err = tmp / f"driver{phase}.txt"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.update(FF_CRASH_LOG=str(self.log), FF_CRASH_PHASE=str(phase))
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(tmp / "state"), executor, store,
                 str(self.out)],
                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )

    def output(self) -> str:
        return self.err.read_text(errors="replace")[-4000:]

    def wait_until(self, ready, what: str) -> None:
        """Poll ``ready()`` every 2 ms; fail if the driver exits or the deadline passes."""
        deadline = time.monotonic() + DEADLINE
        while not ready():
            code = self.proc.poll()
            if code is not None:
                pytest.fail(
                    f"phase {self.phase} driver exited with {code} before {what}:\n"
                    f"{self.output()}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"phase {self.phase}: no {what} within {DEADLINE}s:\n{self.output()}")
            time.sleep(0.002)

    def kill(self) -> None:
        """SIGKILL the driver and wait until it and every worker it started are gone."""
        os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=DEADLINE)
        assert code == -signal.SIGKILL, (
            f"the driver was not killed mid-run (exit code {code}):\n{self.output()}"
        )
        left = _wait_gone(_processes_of(self.log), timeout=5.0)
        assert not left, f"worker processes outlived the killed driver by 5s: {left}"

    def finish(self) -> dict:
        """Wait for the driver to exit on its own; its report."""
        try:
            code = self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"phase {self.phase} did not finish within {DEADLINE}s:\n{self.output()}")
        assert code == 0, f"phase {self.phase} driver exited with {code}:\n{self.output()}"
        return json.loads(self.out.read_text())


def _processes_of(log: Path) -> list[psutil.Process]:
    """Live processes started for this test: they inherited its FF_CRASH_LOG."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("FF_CRASH_LOG") == str(log):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _started(log: Path) -> list[tuple[int, str]]:
    """(phase, task) per line of the execution log, in order."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        phase, task = line.split()
        out.append((int(phase), task))
    return out


def _line_count(log: Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _saved(state_dir: Path, store: str) -> tuple[str | None, set[str], dict[str, int]]:
    """The run a killed driver left: its id (None if none was saved), the tasks saved as
    succeeded, and their saved results."""
    pm = PersistenceManager(state_dir, store=store)
    try:
        runs = pm.runs(WORKFLOW)
        if not runs:
            return None, set(), {}
        assert len(runs) == 1, runs
        info = runs[0]
        assert info.status == "interrupted", f"the killed run says {info.status!r}: {info}"
        saved = pm.load(info.run_id)
        done = {n for n, r in saved.tasks.items() if r.state is TaskState.SUCCEEDED}
        return info.run_id, done, {n: saved.results[n] for n in done}
    finally:
        pm.store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, int]:
    """The results of an uninterrupted run, which run each task once."""
    tmp = tmp_path_factory.mktemp("reference")
    report = Driver(tmp, "sequential", "files", 1).finish()
    assert report["status"] == "succeeded", report
    assert not report["resumed"]
    started = _started(tmp / "tasks.log")
    assert sorted(t for _, t in started) == sorted(layout())
    assert report["results"] == expected()
    return report["results"]


# -- one kill, and the checks after it --------------------------------------------------


class Phases:
    """The phases of one case: what each started, and what the state folder kept."""

    def __init__(self, tmp: Path, executor: str, store: str, reference: dict[str, int]):
        self.tmp = tmp
        self.executor = executor
        self.store = store
        self.reference = reference
        self.phase = 0
        self.run_id: str | None = None  # the run the state folder holds, once there is one
        self.done: set[str] = set()  # tasks it saved as succeeded
        self.story: list[str] = []

    def where(self) -> str:
        return f"{self.executor}, {self.store}: " + "; ".join(self.story)

    def started(self, phase: int) -> list[str]:
        return [t for p, t in _started(self.tmp / "tasks.log") if p == phase]

    def crash(self, mode: str, at: float) -> None:
        """Run the workflow, SIGKILL it at the kill point, check what it left behind."""
        self.phase += 1
        state_dir = self.tmp / "state"
        log = self.tmp / "tasks.log"
        before = _line_count(log)
        driver = Driver(self.tmp, self.executor, self.store, self.phase)
        if mode == "share":  # a share of the tasks left (never all: it must not finish)
            mode, at = "lines", max(1, int(at * (TOTAL - len(self.done) - 1)))
        if mode == "lines":
            driver.wait_until(lambda: _line_count(log) - before >= at, f"{int(at)} task starts")
        elif mode == "state":
            driver.wait_until(state_dir.exists, "a state folder")
            time.sleep(at)  # the kill point: somewhere in opening the state
        else:
            time.sleep(at)  # the kill point: anywhere from imports to the first tasks
        driver.kill()
        started = self.started(self.phase)
        run_id, done, saved_results = _saved(state_dir, self.store)
        self.story.append(
            f"phase {self.phase} killed at {mode}={at}, started {started}, "
            f"then {len(done)} saved: {sorted(done)}"
        )
        where = self.where()
        assert len(started) == len(set(started)), f"a task started twice: {where}"
        if self.run_id is not None:
            assert run_id == self.run_id, f"the resumed run changed its id: {where}"
        assert not self.done & set(started), (
            f"tasks saved as succeeded ran again: {sorted(self.done & set(started))}: {where}"
        )
        assert self.done <= done, f"saved successes were lost: {where}"
        assert done <= self.done | set(started), f"a task saved as succeeded never ran: {where}"
        assert saved_results == {n: self.reference[n] for n in done}, where
        unsaved = set(started) - done
        assert len(unsaved) <= WORKERS[self.executor], (
            f"{len(unsaved)} tasks started but were not saved ({sorted(unsaved)}), more than "
            f"the {WORKERS[self.executor]} that can run at once: {where}"
        )
        self.run_id = run_id
        self.done = done

    def finish(self) -> None:
        """Run the workflow to the end and check it resumed, re-running only the rest."""
        self.phase += 1
        report = Driver(self.tmp, self.executor, self.store, self.phase).finish()
        started = self.started(self.phase)
        self.story.append(f"phase {self.phase} ran to the end, started {started}")
        where = self.where()
        assert report["status"] == "succeeded", f"{report['error']}: {where}"
        assert report["results"] == self.reference, where
        assert not self.done & set(started), (
            f"tasks saved as succeeded ran again: {sorted(self.done & set(started))}: {where}"
        )
        assert sorted(started) == sorted(set(self.reference) - self.done), (
            f"the last run must run each task not saved before exactly once: {where}"
        )
        if self.run_id is not None:
            assert report["resumed"], f"the killed run was not resumed: {where}"
            assert report["run_id"] == self.run_id, where
        else:
            assert not report["resumed"], where


# -- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize(("executor", "store", "mode", "at"), _cases())
def test_sigkill_then_rerun_resumes(executor, store, mode, at, tmp_path, reference):
    """A SIGKILLed run resumes to the reference results, re-running only what was running."""
    phases = Phases(tmp_path, executor, store, reference)
    phases.crash(mode, at)
    phases.finish()


@pytest.mark.parametrize(("executor", "store", "kills"), _twice())
def test_sigkill_twice_then_rerun_resumes(executor, store, kills, tmp_path, reference):
    """A resumed run killed again resumes once more: still one run, nothing saved re-run."""
    phases = Phases(tmp_path, executor, store, reference)
    for mode, at in kills:
        phases.crash(mode, at)
    phases.finish()
