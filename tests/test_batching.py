"""Small task attempts go to process workers in batches (flowforge/executors/process.py)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from flowforge import PersistenceManager, task, workflow
from flowforge.errors import TaskSerializationError, WorkerCrashedError
from flowforge.events import TaskFailed, TaskRetrying, TaskStarted, TaskSucceeded
from flowforge.executors import ProcessExecutor
from flowforge.executors.process import SMALL_SECONDS
from flowforge.testing import RecordingListener

N = 3000


def _workflow(tmp_path: Path, body, n: int = N, **options):
    with workflow("many", executor=ProcessExecutor(2), state_dir=str(tmp_path / "state"),
                  log_dir=None, quiet=True) as wf:
        @task
        def items() -> list[int]:
            return list(range(n))

        task(map="items", name="work", **options)(body)
    return wf


def test_many_small_tasks_have_exact_events_and_saves(tmp_path):
    """Thousands of batched map items: every result, every event, every save is there."""
    def work(items: int) -> int:
        return items * 2

    wf = _workflow(tmp_path, work)
    rec = RecordingListener.attach_to(wf)
    ex = wf.executor
    result = wf.run()
    assert result.ok, result.error
    assert result["work"] == [i * 2 for i in range(N)]
    started = Counter(e.index for e in rec.of_type(TaskStarted) if e.task == "work")
    succeeded = Counter(e.index for e in rec.of_type(TaskSucceeded) if e.task == "work")
    indices = {i: 1 for i in range(N)}
    assert started == Counter({None: 1, **indices}) and succeeded == Counter({None: 1, **indices})
    assert ex._durations.of("work") < SMALL_SECONDS  # type: ignore[attr-defined]
    assert ex.room("work") > ex.max_workers  # type: ignore[attr-defined]
    durations = [e.duration for e in rec.of_type(TaskSucceeded) if e.index is not None]
    assert max(durations) < 1.0  # time in the worker, not time queued
    saved = PersistenceManager(tmp_path / "state").load(result.run_id)
    assert saved.results["work"] == [i * 2 for i in range(N)]


def test_retries_inside_batches_are_exact(tmp_path):
    """Items that fail their first attempt are retried alone and counted once each."""
    def work(items: int, ctx) -> int:
        if items % 97 == 5 and ctx.attempt == 1:
            raise ValueError(f"item {items} fails once")
        return items

    wf = _workflow(tmp_path, work, retries=1, retry_delay=0)
    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok, result.error
    assert result["work"] == list(range(N))
    flaky = {i for i in range(N) if i % 97 == 5}
    assert {e.index for e in rec.of_type(TaskRetrying)} == flaky
    failed = [e for e in rec.of_type(TaskFailed)]
    assert sorted(e.index for e in failed) == sorted(flaky)
    assert all(e.will_retry for e in failed)


def test_a_crash_in_a_batch_is_not_charged_to_its_neighbours(tmp_path):
    """A worker that dies mid-batch: the batch runs again item by item, so an item that
    crashed once and then passes costs nobody an attempt, and every event comes once."""
    marker = tmp_path / "crashed"

    def work(items: int) -> int:
        if items == 2000 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(7)
        return items

    wf = _workflow(tmp_path, work)
    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok, result.error
    assert marker.exists()
    assert result["work"] == list(range(N))
    assert not rec.of_type(TaskFailed)
    succeeded = Counter(e.index for e in rec.of_type(TaskSucceeded) if e.task == "work")
    assert set(succeeded.values()) == {1} and len(succeeded) == N + 1


def test_an_item_that_always_crashes_is_the_only_one_charged(tmp_path):
    """An item whose worker always dies fails with WorkerCrashedError; no other item does."""
    def work(items: int) -> int:
        if items == 2000:
            os._exit(7)
        return items

    wf = _workflow(tmp_path, work)
    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert not result.ok
    failed = [e for e in rec.of_type(TaskFailed) if e.index is not None]
    assert [e.index for e in failed] == [2000]
    assert isinstance(failed[0].error, WorkerCrashedError)
    assert "exited with code 7" in str(failed[0].error)


def test_an_unpicklable_item_fails_alone_with_its_name(tmp_path):
    """One item that cannot be pickled fails with an error naming its input."""
    with workflow("bad", executor=ProcessExecutor(2), autosave=False, log_dir=None,
                  quiet=True, on_error="continue") as wf:
        @task(executor="thread")
        def items() -> list[object]:
            out: list[object] = list(range(1000))
            out[700] = threading.Lock()
            return out

        @task(map="items")
        def work(items: object) -> int:
            return 1

    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    failed = [e for e in rec.of_type(TaskFailed) if e.index is not None]
    assert [e.index for e in failed] == [700]
    assert [e for e in rec.of_type(TaskSucceeded) if e.index is not None]
    assert isinstance(failed[0].error, TaskSerializationError)
    assert "input 'items' (lock)" in str(failed[0].error)
    assert result.tasks["work"].state.value == "failed"


def _sleepy() -> None: ...


def _tiny() -> None: ...


def test_timed_and_unmeasured_tasks_are_never_queued_beyond_the_workers():
    """room() is one per worker until a task is measured small, and stays so when slow."""
    ex = ProcessExecutor(2)
    assert ex.room("never-seen") == 2
    ex._durations.record("slow", _sleepy, [0.5])
    assert ex.room("slow") == 2
    ex._durations.record("tiny", _tiny, [1e-5])
    assert ex.room("tiny") > 2


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_timed_tasks_are_not_batched(tmp_path, timeout):
    """A task with a timeout goes alone, so its timeout starts when it starts."""
    def work(items: int) -> int:
        return os.getpid()

    options = {} if timeout is None else {"timeout": timeout}
    wf = _workflow(tmp_path, work, n=400, **options)
    ex = wf.executor
    sizes: list[int] = []
    original = ex._take  # type: ignore[attr-defined]

    def spy(slot, **kwargs):
        jobs = original(slot, **kwargs)
        if jobs:
            sizes.append(len(jobs))
        return jobs

    ex._take = spy  # type: ignore[attr-defined]
    assert wf.run().ok
    if timeout is None:
        assert max(sizes) > 1
    else:
        assert max(sizes) == 1


def test_fail_fast_drops_queued_attempts_and_slow_batches_stop_early(tmp_path):
    """After a fail_fast failure, attempts still queued never start, and a batch whose
    items turn out slower than measured hands the rest back: the run ends soon."""
    import time

    from flowforge.events import WorkflowFinished

    def work(items: int) -> int:
        if items == 3000:
            raise ValueError("item 3000 fails")
        if items > 3000:
            time.sleep(0.01)  # slower than the average measured so far
        return items

    wf = _workflow(tmp_path, work, n=6000)
    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.status.value == "failed"
    failed_at = min(e.timestamp for e in rec.of_type(TaskFailed))
    finished_at = rec.of_type(WorkflowFinished)[0].timestamp
    ran_after = [e for e in rec.of_type(TaskSucceeded) if e.index is not None and e.index > 3000]
    assert len(ran_after) < 60  # without both: hundreds of 10 ms items, seconds
    assert finished_at - failed_at < 2.0


def test_cancel_queued_returns_only_what_never_started():
    """cancel_queued() cancels queued task attempts and leaves the running one alone."""
    from tests import fixture_tasks

    ex = ProcessExecutor(1)
    try:
        running = ex.submit(fixture_tasks.double, 21)
        assert running.result(timeout=60) == 42
        from flowforge import Task
        from flowforge.executors.base import AttemptCall

        slow = Task("slow", _sleep)
        first = ex.submit_attempt(AttemptCall(slow, {"seconds": 0.5}, None, None, "slow"))
        queued = [ex.submit_attempt(AttemptCall(slow, {"seconds": 0.0}, None, None, "slow"))
                  for _ in range(5)]
        dropped = ex.cancel_queued()
        assert set(dropped) == set(queued) and all(f.cancelled() for f in queued)
        assert first.result(timeout=60) is not None
    finally:
        ex.shutdown()


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds
