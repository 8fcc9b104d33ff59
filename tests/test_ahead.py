"""Attempts sent ahead: with autosave off, the process executor sends a worker its next
attempt while it still runs one, so the worker starts it without a round trip through
the driver (flowforge/executors/process.py, ``AttemptCall(ahead=True)``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from flowforge import Task, TaskState, task, workflow
from flowforge._private.remote import unpack_outcome
from flowforge.errors import TaskTimeoutError, WorkerCrashedError
from flowforge.executors import ProcessExecutor
from flowforge.executors._slot import _has_died
from flowforge.executors.base import AttemptCall
from tests import fixture_tasks
from tests.waiting import wait_until


def _touch(path: str) -> str:
    Path(path).touch()
    return path


def _sleep_then(path: str, seconds: float) -> str:
    import time

    time.sleep(seconds)
    return _touch(path)


def _attempt(
    ex: ProcessExecutor, task: Task, kwargs: dict[str, object], env: object, policy: object,
    name: str, *, ahead: bool = False,
):
    """Hand ``ex`` one attempt, as the engine does."""
    return ex.submit_attempt(AttemptCall(task, kwargs, env, policy, name, ahead=ahead))


def _measure(ex: ProcessExecutor, *names: str) -> None:
    """Run a quick attempt of each task name once, so the executor knows them as short:
    only behind those does it send an attempt ahead."""
    for name in names:
        _attempt(ex, Task(name, fixture_tasks.pid), {}, None, None, name).result(timeout=60)


def test_the_attempt_sent_ahead_starts_without_the_driver(tmp_path):
    """While the driver is stuck handling the first attempt's result, the worker has
    already started the attempt sent ahead: it needed nothing more from the driver."""
    ex = ProcessExecutor(1)
    marker = str(tmp_path / "second-ran")
    seen: list[bool] = []
    try:
        _measure(ex, "first")
        # It lasts long enough for loky's thread to have put `second` in the worker's
        # pipe before `first` reports: that thread is the one stalled below.
        first = _attempt(ex, Task("first", _sleep_then),
                               {"path": str(tmp_path / "first-ran"), "seconds": 0.3},
                               None, None, "first", ahead=True)
        second = _attempt(ex, Task("second", _touch), {"path": marker}, None, None,
                                "second", ahead=True)
        assert ex._slots[0].ahead is not None  # type: ignore[attr-defined]

        def stall(_future: object) -> None:  # runs in the thread that reads results
            seen.append(bool(wait_until(lambda: os.path.exists(marker), 30, "second")))

        first.add_done_callback(stall)
        assert unpack_outcome(second.result(timeout=60), "second") == marker
        assert unpack_outcome(first.result(timeout=60), "first").endswith("first-ran")
        assert seen == [True]
    finally:
        ex.shutdown()


def test_a_crash_charges_only_the_attempt_that_crashed(tmp_path):
    """The worker dies under one attempt while another waits behind it in its pipe: the
    one behind never started, so it runs again on a new worker, uncharged."""
    ex = ProcessExecutor(1)
    _measure(ex, "crasher")  # it is short: what comes next may wait behind it
    with workflow("crashy", executor=ex, autosave=False, log_dir=None,
                  quiet=True, progress=False, on_error="continue") as wf:
        wf.add_task(Task("crasher", fixture_tasks.crash))
        for i in range(3):
            wf.add_task(Task(f"ok{i}", fixture_tasks.pid))
    sent_ahead = _count_sent_ahead(wf.executor)
    result = wf.run()
    assert sent_ahead, "nothing waited behind the crashing attempt: the test proves nothing"
    assert result.tasks["crasher"].state is TaskState.FAILED
    assert isinstance(result.tasks["crasher"].error, WorkerCrashedError)
    for i in range(3):
        assert result.tasks[f"ok{i}"].state is TaskState.SUCCEEDED
        assert result.tasks[f"ok{i}"].attempts == 1


def test_a_timed_attempt_never_has_one_waiting_behind_it(tmp_path):
    """A timed attempt is killed alone at its timeout: nothing is sent behind it, so the
    next attempt starts on a fresh worker and is not charged."""
    marker = str(tmp_path / "quick-ran")
    with workflow("timed", executor=ProcessExecutor(1), autosave=False, log_dir=None,
                  quiet=True, progress=False, on_error="continue") as wf:
        wf.add_task(Task("slow", _sleep_then, timeout=0.5))
        wf.add_task(Task("quick", _touch))
    result = wf.run(params={"path": marker, "seconds": 60.0})
    assert isinstance(result.tasks["slow"].error, TaskTimeoutError)
    assert result.tasks["quick"].state is TaskState.SUCCEEDED
    assert result.tasks["quick"].attempts == 1 and os.path.exists(marker)


@pytest.mark.parametrize("autosave", [False, True])
def test_only_runs_that_save_nothing_send_attempts_ahead(tmp_path, autosave):
    """With autosave on, a kill -9 of the driver must re-run at most the attempts
    running at that instant (tests/test_crash.py): nothing is sent ahead then."""
    with workflow("flags", executor=ProcessExecutor(2), autosave=autosave,
                  state_dir=str(tmp_path / "state"), log_dir=None, quiet=True,
                  progress=False) as wf:
        for i in range(8):
            wf.add_task(Task(f"t{i}", fixture_tasks.pid))
    flags: list[bool] = []
    original = wf.executor.submit_attempt  # type: ignore[union-attr]

    def spy(call: AttemptCall) -> object:
        flags.append(call.ahead)
        return original(call)

    wf.executor.submit_attempt = spy  # type: ignore[union-attr]
    assert wf.run().ok
    assert len(flags) == 8 and set(flags) == {not autosave}


def test_fail_fast_lets_the_attempt_sent_ahead_finish_and_starts_nothing_else(tmp_path):
    """An attempt sent ahead counts as running (its TaskStarted was published): after a
    fail_fast failure it finishes; what was never sent ends CANCELLED, never started."""
    ex = ProcessExecutor(1)
    _measure(ex, "boom")
    with workflow("ff", executor=ex, autosave=False, log_dir=None,
                  quiet=True, progress=False) as wf:
        @task
        def boom() -> None:
            raise ValueError("boom")

        for i in range(4):
            wf.add_task(Task(f"after{i}", fixture_tasks.pid))
    result = wf.run()
    assert result.status.value == "failed"
    states = [result.tasks[f"after{i}"].state for i in range(4)]
    assert states == [TaskState.SUCCEEDED] + [TaskState.CANCELLED] * 3
    assert all(result.tasks[f"after{i}"].attempts == 0 for i in range(1, 4))


def _count_sent_ahead(ex: ProcessExecutor) -> list[int]:
    """Spy on the executor: one entry each time jobs are sent to wait behind others."""
    sent: list[int] = []
    original = ex._launch  # type: ignore[attr-defined]
    lock = threading.Lock()

    def launch(slot: object, jobs: list[object]) -> None:
        if jobs is getattr(slot, "ahead", None):
            with lock:
                sent.append(len(jobs))
        original(slot, jobs)

    ex._launch = launch  # type: ignore[attr-defined]
    return sent


def _flaky(name: str, folder: str, crash: bool, seconds: float) -> str:
    """Record this attempt's start, then crash the worker on the first attempt if asked."""
    import time

    starts = Path(folder, name)
    with open(starts, "a") as f:
        f.write("x")
    if crash and starts.stat().st_size == 1:
        os._exit(7)
    time.sleep(seconds)
    return name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_crashes_charge_and_start_each_attempt_once(tmp_path, seed):
    """Random workloads where some attempts kill their worker: every attempt starts
    exactly once (nothing sent ahead runs twice), only crashers are charged, all end."""
    import random

    rng = random.Random(seed)
    folder = tmp_path / "starts"
    folder.mkdir()
    crashers = set()
    with workflow(f"random{seed}", executor=ProcessExecutor(2), autosave=False,
                  log_dir=None, quiet=True, progress=False) as wf:
        for i in range(24):
            name = f"t{i}"
            crash = rng.random() < 0.2
            if crash:
                crashers.add(name)
            deps = [f"t{j}" for j in range(i) if rng.random() < 0.1]
            params = {"name": name, "folder": str(folder), "crash": crash,
                      "seconds": rng.choice([0.0, 0.005, 0.02])}
            wf.add_task(Task(name, _bound(params), depends_on=deps, retries=1))
    result = wf.run()
    assert result.ok, result.error
    for i in range(24):
        name = f"t{i}"
        expected = 2 if name in crashers else 1
        assert result.tasks[name].attempts == expected, name
        assert (folder / name).read_text() == "x" * expected, name


def _bound(params: dict[str, object]):
    import functools

    return functools.partial(_flaky, **params)


def _mark(folder: str, name: str, seconds: float = 0.0, blob: object = None) -> str:
    """Count this attempt's start in ``folder/name``, then sleep ``seconds``."""
    import time

    with open(Path(folder, name), "a") as f:
        f.write("x")
    time.sleep(seconds)
    return name


def _starts(folder: Path, name: str) -> int:
    path = folder / name
    return len(path.read_text()) if path.exists() else 0


def _submit(ex: ProcessExecutor, folder: Path, name: str, **kwargs: object):
    inputs = {"folder": str(folder), "name": name, **kwargs}
    return _attempt(ex, Task(name, _mark), inputs, None, None, name, ahead=True)


def test_a_worker_that_died_idle_is_replaced_and_charges_nobody(tmp_path):
    """The OOM killer (here kill -9) takes an idle worker: the next attempts start on a
    new one instead of failing, never started, with the dead pool's error."""
    import signal

    ex = ProcessExecutor(1)
    try:
        assert unpack_outcome(_submit(ex, tmp_path, "j0").result(timeout=60), "j0") == "j0"
        worker = ex._slots[0]._process  # type: ignore[attr-defined]
        os.kill(worker.pid, signal.SIGKILL)
        # Until its end is visible to the driver, a death looks like a crash of the next
        # attempt (a window of milliseconds); the OOM killer's victims die long before.
        wait_until(lambda: _has_died(worker), 30, "the worker's end to be visible")
        for name in ("j1", "j2"):
            assert unpack_outcome(_submit(ex, tmp_path, name).result(timeout=60), name) == name
            assert _starts(tmp_path, name) == 1
    finally:
        ex.shutdown()


def test_shutdown_while_an_attempt_is_packed_leaves_no_future_waiting(tmp_path):
    """shutdown() while the next attempt is still being pickled (a large input): that
    attempt is cancelled, never started, and a later use of the executor does not run
    it."""
    ex = ProcessExecutor(1)
    _measure(ex, "j0", "j1")  # measured short: j1, then j2, are sent behind them
    blob = list(range(2_000_000))  # pickling this takes a while
    first = _submit(ex, tmp_path, "j0", seconds=0.3)
    behind = _submit(ex, tmp_path, "j1", seconds=1.0)
    packed = _submit(ex, tmp_path, "j2", blob=blob)
    first.result(timeout=60)
    ex.shutdown(wait=True)
    wait_until(lambda: behind.done() and packed.done(), 30, "every future to end")
    assert packed.cancelled() and _starts(tmp_path, "j2") == 0
    try:
        later = _submit(ex, tmp_path, "j3")
        assert unpack_outcome(later.result(timeout=60), "j3") == "j3"
        assert _starts(tmp_path, "j2") == 0
    finally:
        ex.shutdown()


def test_cancelling_the_attempt_behind_leaves_the_running_one_alone(tmp_path):
    """cancel_running() of an attempt waiting in a busy worker's pipe does not kill the
    attempt in front of it: that one finishes normally."""
    ex = ProcessExecutor(1)
    try:
        _measure(ex, "j1")
        running = _submit(ex, tmp_path, "j1", seconds=0.5)
        waiting = _submit(ex, tmp_path, "A")
        assert ex._slots[0].ahead is not None  # type: ignore[attr-defined]
        wait_until(lambda: _starts(tmp_path, "j1") == 1, 60, "j1 to start")
        assert ex.cancel_running(waiting) and waiting.cancelled()
        assert unpack_outcome(running.result(timeout=60), "j1") == "j1"
    finally:
        ex.shutdown()


def _wait_for(path: str) -> str:
    """Wait (up to 20 s) until ``path`` exists: whether it did."""
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return "saw it"
        time.sleep(0.01)
    return "gave up"


def test_nothing_waits_behind_a_long_or_unmeasured_attempt(tmp_path):
    """Two workers: `long` runs until `after` has started; `after` depends on `short2`.
    Were `short2` sent ahead behind `long`, it could not start before `long` ends, and
    neither could `after`: `long` would give up. It is sent to the free worker."""
    marker = str(tmp_path / "after-started")
    with workflow("stall", executor=ProcessExecutor(2), autosave=False, log_dir=None,
                  quiet=True, progress=False) as wf:
        wf.add_task(Task("long", _wait_for, depends_on=[]))
        for name in ("short1", "short2", "short3"):
            wf.add_task(Task(name, fixture_tasks.pid))
        wf.add_task(Task("after", _touch, depends_on=["short2"]))
    result = wf.run(params={"path": marker})
    assert result.ok, result.error
    assert result["long"] == "saw it"


def test_attempts_of_a_short_task_are_still_sent_ahead(tmp_path):
    """A map of short items: once measured, its attempts wait in busy workers' pipes."""
    ex = ProcessExecutor(2)
    with workflow("short", executor=ex, autosave=False, log_dir=None, quiet=True,
                  progress=False) as wf:

        @task
        def items() -> list[int]:
            return list(range(60))

        @task(map="items")
        def nap(items: int) -> int:
            import time

            time.sleep(0.005)
            return items

    sent_ahead = _count_sent_ahead(ex)
    result = wf.run()
    assert result.ok and result["nap"] == list(range(60))
    assert sent_ahead


def test_an_attempt_waiting_behind_one_that_turned_out_long_is_taken_back(tmp_path):
    """`x` was measured short, so C is sent to wait behind it; this `x` runs until C has
    run. When the other worker has nothing left to do it takes C back from the pipe
    (its worker had not started it) and runs it: nothing waits behind a long attempt
    while a worker idles."""
    ex = ProcessExecutor(2)
    marker = str(tmp_path / "c-ran")
    try:
        ex.start()  # both workers up, so nothing below waits for one to boot
        _measure(ex, "x", "x")
        long = _attempt(ex, Task("x", _wait_for), {"path": marker}, None, None, "x",
                              ahead=True)
        quick = _attempt(ex, Task("y", fixture_tasks.pid), {}, None, None, "y",
                               ahead=True)
        behind = _attempt(ex, Task("c", _touch), {"path": marker}, None, None, "c",
                                ahead=True)
        assert any(slot.ahead for slot in ex._slots), "C was not sent ahead: proves nothing"
        assert unpack_outcome(behind.result(timeout=60), "c") == marker
        assert unpack_outcome(long.result(timeout=60), "x") == "saw it"
        assert unpack_outcome(quick.result(timeout=60), "y") > 0
    finally:
        ex.shutdown()
    assert not list(Path("/dev/shm").glob(f"flowforge-{os.getpid()}-ahead-*"))


def test_a_retry_that_runs_long_holds_up_nothing(tmp_path):
    """The first attempt of `flaky` fails at once (so it is measured short); its retry
    runs until `after` has started, and `after` depends on `short2`, which may have been
    sent to wait behind that retry: it must run elsewhere."""
    marker = str(tmp_path / "after-started")
    with workflow("retry", executor=ProcessExecutor(2), autosave=False, log_dir=None,
                  quiet=True, progress=False) as wf:

        @task(retries=1)
        def flaky(ctx) -> str:
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails at once")
            return _wait_for(marker)

        @task
        def gate() -> int:
            import time

            time.sleep(0.06)
            return 1

        @task
        def short1(gate: int) -> int:
            return gate

        @task
        def short2(gate: int) -> int:
            return gate

        @task
        def after(short2: int) -> str:
            return _touch(marker)

    result = wf.run()
    assert result.ok, result.error
    assert result["flaky"] == "saw it"


class _Bulky:
    """One of many small objects that together take a while to pickle."""

    def __init__(self, i: int) -> None:
        self.i = i


def _touch_with(path: str, bulk: object) -> str:
    return _touch(path)


def _nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_an_attempt_still_being_packed_is_taken_back_too(tmp_path):
    """As above, but C's input takes a while to pickle: the other worker finishes (and
    finds nothing queued) while C is still being packed to wait behind `x`. It takes C
    then, rather than idling until `x` ends."""
    ex = ProcessExecutor(2)
    marker = str(tmp_path / "c-ran")
    bulk = [_Bulky(i) for i in range(300_000)]
    try:
        ex.start()
        _measure(ex, "x", "x", "y")
        long = _attempt(ex, Task("x", _wait_for), {"path": marker}, None, None, "x",
                              ahead=True)
        quick = _attempt(ex, Task("y", _nap), {"seconds": 0.05}, None, None, "y",
                               ahead=True)
        behind = _attempt(ex, Task("c", _touch_with), {"path": marker, "bulk": bulk},
                                None, None, "c", ahead=True)
        assert unpack_outcome(behind.result(timeout=60), "c") == marker
        assert unpack_outcome(long.result(timeout=60), "x") == "saw it"
        assert unpack_outcome(quick.result(timeout=60), "y") == 0.05
    finally:
        ex.shutdown()
    assert not list(Path("/dev/shm").glob(f"flowforge-{os.getpid()}-ahead-*"))
