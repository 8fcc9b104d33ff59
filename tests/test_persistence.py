"""Persistence and resume: what is saved, what a resumed run restores, what is refused.

Every behaviour runs on both stores (files and SQLite) through the ``store`` fixture.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from flowforge import StateError, WorkflowLockedError, task, workflow
from flowforge.events import TaskStarted, WorkflowStarted
from flowforge.persistence import PersistenceManager, _frames
from flowforge.persistence.files import FileStore
from flowforge.persistence.plan import RESTORE, RUN
from flowforge.persistence.records import DB_FILE
from flowforge.testing import RecordingListener

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["files", "sqlite"])
def store(request):
    return request.param


def diamond(name, calls, fail, *, opts, store, **options):
    """a -> (b, c) -> d; each task notes its call; tasks in ``fail`` raise."""
    with workflow(name, executor="sequential", state_store=store, **opts, **options) as wf:

        def note(n):
            calls.append(n)
            if n in fail:
                raise RuntimeError(f"{n} failed on purpose")

        @task
        def a():
            note("a")
            return 1

        @task
        def b(a):
            note("b")
            return a + 10

        @task
        def c(a):
            note("c")
            return a + 100

        @task
        def d(b, c):
            note("d")
            return b + c

    return wf


# -- resume --------------------------------------------------------------------------


def test_failed_run_resumes_with_same_run_id_and_restores_succeeded_tasks(opts, store):
    """A failed run is resumed: same run_id, succeeded tasks not run again, results flow."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store=store)
    first = wf.run()
    assert first.status == "failed" and calls == ["a", "b", "c", "d"]

    calls.clear()
    fail.clear()
    rec = RecordingListener.attach_to(wf)
    second = wf.run()
    assert second.ok and second.resumed and second.run_id == first.run_id
    assert calls == ["d"]
    assert dict(second.results) == {"a": 1, "b": 11, "c": 101, "d": 112}
    assert [t.name for t in second.tasks.values() if t.restored] == ["a", "b", "c"]
    started = rec.of_type(WorkflowStarted)[0]
    assert started.resumed and started.restored == 3
    assert started.reasons == {"failed last time (RuntimeError: d failed on purpose)": ["d"]}
    assert [e.task for e in rec.of_type(TaskStarted)] == ["d"]


def test_resume_is_logged_with_restored_count_and_reasons(opts, store, tmp_path):
    """The log file says the run resumed, how many tasks were restored and why others run."""
    import json

    calls, fail = [], {"c"}
    wf = diamond("w", calls, fail, opts=opts, store=store)
    wf.run()
    fail.clear()
    wf.run()
    lines = [json.loads(x) for x in (tmp_path / "logs" / "workflow.log").read_text().splitlines()]
    started = [x for x in lines if x["event"] == "workflow_started"]
    assert started[0]["resumed"] is False
    assert started[1]["resumed"] is True and started[1]["restored"] == 2
    assert started[1]["runs_again"] == {
        "failed last time (RuntimeError: c failed on purpose)": ["c"],
        "not reached last time": ["d"],
    }


def test_after_a_success_the_next_run_starts_fresh(opts, store):
    """The run after a successful run is a new run with a new run_id."""
    calls = []
    wf = diamond("w", calls, set(), opts=opts, store=store)
    first = wf.run()
    second = wf.run()
    assert first.ok and second.ok and not second.resumed
    assert second.run_id != first.run_id
    assert calls == ["a", "b", "c", "d"] * 2


@pytest.mark.parametrize("how", ["fresh", "resume_false"])
def test_fresh_and_resume_false_start_a_new_run(opts, store, how):
    """run(fresh=True) and workflow(resume=False) ignore an unfinished run."""
    calls, fail = [], {"d"}
    extra = {"resume": False} if how == "resume_false" else {}
    wf = diamond("w", calls, fail, opts=opts, store=store, **extra)
    first = wf.run()
    fail.clear()
    calls.clear()
    second = wf.run(fresh=True) if how == "fresh" else wf.run()
    assert second.ok and not second.resumed and second.run_id != first.run_id
    assert calls == ["a", "b", "c", "d"]


def test_autosave_off_reads_and_writes_nothing(opts, tmp_path):
    """autosave=False creates no state folder and never resumes."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files", autosave=False)
    wf.run()
    fail.clear()
    assert not wf.run().resumed
    assert not (tmp_path / "state").exists()


def test_process_executor_resumes_with_pickled_results(opts, store):
    """Results computed in process workers are saved and restored like any other."""
    from tests import fixture_tasks as ft

    with workflow("p", executor="process", max_workers=2, state_store=store, **opts) as wf:
        wf.add_task(ft.add_one)
        wf.add_task(ft.double)

        @task
        def x():
            return 20

        @task
        def total(add_one, double):
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return add_one + double

    first = wf.run()
    assert first.status == "failed"
    open("go", "w").close()
    second = wf.run()
    assert second.ok and second.resumed and second["total"] == 21 + 40
    assert sorted(n for n, t in second.tasks.items() if t.restored) == ["add_one", "double", "x"]


def test_skipped_tasks_are_not_reached_and_run_on_resume(opts, store):
    """Under on_error="continue", skipped tasks are recorded and run when resumed."""
    calls, fail = [], {"b"}
    wf = diamond("w", calls, fail, opts=opts, store=store, on_error="continue")
    wf.run()
    plan = wf.plan()
    assert plan["d"].action == RUN and "skipped" in plan["d"].reason
    assert plan["c"].action == RESTORE
    fail.clear()
    calls.clear()
    assert wf.run().ok and calls == ["b", "d"]


# -- what invalidates a saved result ---------------------------------------------------


def _chain(name, b_source, opts, store, **b_options):
    """a -> b -> c, where b is compiled from ``b_source`` (so tests can edit its code)."""
    namespace: dict = {}
    exec(textwrap.dedent(b_source), namespace)
    with workflow(name, executor="sequential", state_store=store, **opts) as wf:

        @task
        def a():
            return 1

        task(namespace["b"], **b_options)

        @task
        def c(b):
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return b * 2

    return wf


B1 = """
def b(a):
    return a + 1
"""
B1_COMMENTED = """
def b(a):
    # a comment and a blank line change nothing that runs

    return a + 1
"""
B2 = """
def b(a):
    return a + 2
"""


def test_changed_code_reruns_the_task_and_everything_downstream(opts, store):
    """Editing what a task computes invalidates its result and its downstream results."""
    _chain("w", B1, opts, store).run()
    wf = _chain("w", B2, opts, store)
    plan = wf.plan()
    assert plan["a"].action == RESTORE
    assert (plan["b"].action, plan["b"].reason) == (RUN, "code or options changed")
    assert plan["c"].action == RUN
    open("go", "w").close()
    result = wf.run()
    assert result.ok and result["c"] == 6


def test_comment_only_edit_keeps_the_saved_result(opts, store):
    """Fingerprints hash bytecode, so comments and blank lines do not invalidate."""
    _chain("w", B1, opts, store).run()
    plan = _chain("w", B1_COMMENTED, opts, store).plan()
    assert plan["b"].action == RESTORE


def test_changed_options_invalidate(opts, store):
    """A task declared with other options (here retries) runs again."""
    _chain("w", B1, opts, store).run()
    plan = _chain("w", B1, opts, store, retries=2).plan()
    assert plan["b"].reason == "code or options changed"
    assert plan["c"].reason == "upstream 'b' runs again" or plan["c"].action == RUN


def test_other_params_start_a_fresh_run_and_the_same_params_resume(opts, store):
    """A run with other params is not a resume of the failed one (its run key differs:
    see tests/test_runkey.py); the plan says so. The same params restore what finished."""
    def build():
        with workflow("w", executor="sequential", state_store=store, **opts) as wf:

            @task
            def a(n):
                return n

            @task
            def b():
                return 5

            @task
            def c(a, b):
                if not os.path.exists("go"):
                    raise RuntimeError("not yet")
                return a + b

        return wf

    failed = build().run(params={"n": 1})
    plan = build().plan(params={"n": 2})
    assert plan.run_id is None and plan["a"].action == RUN and plan["b"].action == RUN
    assert any(f"did not resume run {failed.run_id} (failed): it ran with other params "
               "('n' differ)" in note for note in plan.notes), plan.notes
    same = build().plan(params={"n": 1})
    assert same.run_id == failed.run_id and same["a"].action == RESTORE


def test_results_from_other_versions_are_not_trusted(opts, store, monkeypatch):
    """Results pickled under another cloudpickle (or Python) version run again, with a note
    naming both versions."""
    real = _frames.current_versions()
    monkeypatch.setattr(
        _frames, "current_versions", lambda: {"python": real["python"], "cloudpickle": "0.0.1"}
    )
    _chain("w", B1, opts, store).run()
    monkeypatch.setattr(_frames, "current_versions", lambda: real)
    rec_wf = _chain("w", B1, opts, store)
    plan = rec_wf.plan()
    assert plan.restored == []
    assert "cloudpickle 0.0.1" in plan["a"].reason and real["cloudpickle"] in plan["a"].reason
    assert any("cloudpickle 0.0.1" in n for n in plan.notes)
    rec = RecordingListener.attach_to(rec_wf)
    open("go", "w").close()
    assert rec_wf.run().ok
    assert any("0.0.1" in n for n in rec.of_type(WorkflowStarted)[0].notes)


def test_plan_before_and_after_a_failure(opts, store):
    """wf.plan() names each task's fate: new run, restore, failed last time, not reached,
    new task."""
    calls, fail = [], {"c"}
    wf = diamond("w", calls, fail, opts=opts, store=store)
    plan = wf.plan()
    assert not plan.resume and {e.reason for e in plan.entries.values()} == {"new run"}
    wf.run()
    with workflow("w", executor="sequential", state_store=store, **opts) as wf2:
        for t in wf.tasks.values():
            wf2.add_task(t)

        @task
        def e(a):
            return a

    plan = wf2.plan()
    assert plan.resume and plan.run_id == wf.plan().run_id
    assert plan["a"].action == RESTORE and plan["b"].action == RESTORE
    assert plan["c"].reason.startswith("failed last time")
    assert plan["d"].reason == "not reached last time"
    assert plan["e"].reason == "new task"
    assert "resume run" in str(plan) and "failed last time" in str(plan)
    assert calls == ["a", "b", "c"]  # plan() ran nothing


# -- results: memory, large, unpicklable ----------------------------------------------


class Payload:
    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return isinstance(other, Payload) and other.n == self.n


@pytest.mark.parametrize("autosave", [True, False])
def test_engine_drops_a_saved_result_once_its_consumers_have_it(opts, store, autosave):
    """With autosave, a result is let go once every downstream task started (and loaded
    back on demand); without autosave it stays in memory."""
    refs: dict = {}
    alive: dict = {}

    with workflow("w", executor="sequential", state_store=store, autosave=autosave,
                  **opts) as wf:

        @task
        def a():
            p = Payload(1)
            refs["a"] = weakref.ref(p)
            return p

        @task
        def b(a):
            return Payload(a.n + 1)

        @task
        def c(b):
            gc.collect()
            alive["a"] = refs["a"]() is not None
            return b.n

    result = wf.run()
    assert result.ok
    assert alive["a"] is (not autosave)
    assert result["a"] == Payload(1)  # loaded back from the state folder when dropped


def test_retry_reloads_an_input_that_was_dropped(opts, store):
    """A retried task gets its inputs again even after the engine let them go."""
    attempts = []
    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task
        def a():
            return [1, 2, 3]

        @task(retries=2)
        def b(a):
            attempts.append(list(a))
            if len(attempts) < 2:
                raise RuntimeError("flaky")
            return sum(a)

    assert wf.run()["b"] == 6 and attempts == [[1, 2, 3], [1, 2, 3]]


def test_large_results_go_in_their_own_file_and_come_back(opts, store, tmp_path):
    """A result over 1 MB is saved beside the journal and restored on resume."""
    big = bytes(range(256)) * 5000  # 1.28 MB
    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task
        def a():
            return big

        @task
        def b(a):
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return len(a)

    wf.run()
    if store == "files":
        blobs = list((tmp_path / "state").glob("w/*.blobs/*.pkl"))
        assert len(blobs) == 1 and stat.S_IMODE(blobs[0].stat().st_mode) == 0o600
    open("go", "w").close()
    result = wf.run()
    assert result.resumed and result["b"] == len(big) and result["a"] == big


def _large_results_kept(tmp_path, store):
    """How many large results the state folder holds (files, or SQLite rows)."""
    if store == "files":
        return len(list((tmp_path / "state").glob("*/*.blobs/*")))
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "state" / DB_FILE)) as db:
        return db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]


@pytest.mark.parametrize("executor", ["sequential", "process"])
def test_a_loop_keeps_one_large_result_not_one_per_iteration(opts, store, tmp_path, executor):
    """Each saved iteration supersedes the one before: its large result is deleted, yet a
    failed loop still resumes from its last iteration, and once the loop is done only
    its own result is kept."""
    from flowforge import Loop

    size = 1_300_000  # over the 1 MiB at which a result is kept on its own

    with workflow("w", executor=executor, max_workers=1, state_store=store, **opts) as wf:

        @task(loop=Loop(max_iterations=5), retry_delay=0)
        def grow(ctx):
            if ctx.iteration == 3 and not os.path.exists("go"):
                raise RuntimeError("not yet")
            return bytes([ctx.iteration]) * size if ctx.previous is None or (
                ctx.previous[:1] == bytes([ctx.iteration - 1])
            ) else b"wrong previous"

    first = wf.run()
    assert first.status == "failed"
    assert _large_results_kept(tmp_path, store) == 1  # iteration 2's, to resume from
    open("go", "w").close()
    second = wf.run()
    assert second.ok and second.resumed, second.error
    assert second["grow"] == bytes([4]) * size
    assert _large_results_kept(tmp_path, store) == 1  # the loop's own result


def test_a_loop_resumes_past_an_iteration_that_could_not_be_saved(opts, store, tmp_path):
    """An iteration whose result cannot be pickled is not saved, so the one before keeps
    its large result: the resume goes on from there."""
    import threading

    from flowforge import Loop

    size = 1_300_000
    ran = []

    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task(loop=Loop(max_iterations=6))
        def grow(ctx):
            ran.append(ctx.iteration)
            if ctx.iteration == 4 and not os.path.exists("go"):
                raise RuntimeError("not yet")
            if ctx.iteration == 3:
                return bytes([3]) * size, threading.Lock()  # cannot be saved
            return bytes([ctx.iteration]) * size

    assert wf.run().status == "failed"
    assert ran == [0, 1, 2, 3, 4]
    open("go", "w").close()
    ran.clear()
    result = wf.run()
    assert result.ok and result.resumed, result.error
    assert ran == [3, 4, 5] and result["grow"] == bytes([5]) * size


def test_a_loop_whose_saved_iteration_is_unreadable_starts_over(opts, tmp_path):
    """If the last saved iteration cannot be loaded back (its file is gone), the resumed
    loop starts again from its first iteration rather than stalling."""
    from flowforge import Loop

    ran = []

    with workflow("w", executor="sequential", **opts) as wf:

        @task(loop=Loop(max_iterations=4))
        def grow(ctx):
            ran.append(ctx.iteration)
            if ctx.iteration == 2 and not os.path.exists("go"):
                raise RuntimeError("not yet")
            return bytes([ctx.iteration]) * 1_300_000

    assert wf.run().status == "failed"
    for blob in (tmp_path / "state").glob("*/*.blobs/*"):
        blob.unlink()
    open("go", "w").close()
    ran.clear()
    result = wf.run()
    assert result.ok and result.resumed, result.error
    assert ran == [0, 1, 2, 3]


def test_unpicklable_result_keeps_the_run_going_and_reruns_on_resume(opts, store):
    """A result that cannot be pickled is kept in memory; a resume runs that task again."""
    calls = []
    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task
        def a():
            calls.append("a")
            return threading.Lock()

        @task
        def b(a):
            calls.append("b")
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return "ok"

    assert wf.run().status == "failed"
    plan = wf.plan()
    assert plan["a"].action == RUN and "could not pickle" in plan["a"].reason
    open("go", "w").close()
    assert wf.run().ok and calls == ["a", "b", "a", "b"]


def test_lambda_results_are_pickled_by_value(opts, store):
    """A result cloudpickle alone can save (a lambda) is restored and callable."""
    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task
        def f():
            return lambda x: x * 3

        @task
        def g(f):
            if not os.path.exists("go"):
                raise RuntimeError("not yet")
            return f(2)

    wf.run()
    open("go", "w").close()
    result = wf.run()
    assert result.resumed and result["g"] == 6 and result["f"](5) == 15


# -- the manager ----------------------------------------------------------------------


def test_manager_lists_loads_deletes_and_prunes(opts, store):
    """runs() lists newest first with counts, load() returns records and results,
    delete() and prune() clean up."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store=store)
    failed = wf.run()
    fail.clear()
    wf.run()
    latest = wf.run(fresh=True)
    pm = PersistenceManager("state", store=store)
    runs = pm.runs("w")
    assert [r.run_id for r in runs] == [latest.run_id, failed.run_id]
    assert runs[1].status == "succeeded" and runs[1].restored == 3 and runs[1].resumes == 1
    assert (runs[0].total, runs[0].succeeded, runs[0].failed) == (4, 4, 0)
    saved = pm.load(failed.run_id)
    assert saved.tasks["d"].state == "succeeded" and saved.tasks["d"].saved
    assert dict(saved.results) == {"a": 1, "b": 11, "c": 101, "d": 112}
    assert pm.prune(keep=1) == [failed.run_id]
    assert [r.run_id for r in pm.runs()] == [latest.run_id]
    pm.delete(latest.run_id)
    assert pm.runs() == []
    with pytest.raises(KeyError, match="no saved run"):
        pm.load(latest.run_id)


def test_resumed_journal_is_compacted_to_one_record_per_task(opts, store):
    """A resume leaves superseded records; the end of the run compacts them away."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store=store)
    run_id = wf.run().run_id
    fail.clear()
    wf.run()
    pm = PersistenceManager("state", store=store)
    scan = pm.store.read_journal("w", run_id)
    records = [p for _, p in scan.entries if not _frames.is_header(p)]
    assert len(records) == 4
    assert dict(pm.load(run_id).results)["d"] == 112


# -- crash safety and refusal ---------------------------------------------------------


def _journal(tmp_path, name="w"):
    (path,) = (tmp_path / "state" / name).glob("*.journal")
    return path


def test_state_files_are_owner_only(opts, tmp_path):
    """Every state file is 0600 and every folder FlowForge makes is 0700."""
    calls = []
    diamond("w", calls, {"d"}, opts=opts, store="files", state_dir=str(tmp_path / "new" / "st")).run()
    root = tmp_path / "new"
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_truncated_journal_at_every_byte_loads_and_keeps_whole_records(opts, tmp_path):
    """A journal cut at any byte (a kill mid-write) loads: the half record is dropped,
    whole records before it are restored, and the next run succeeds."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    path = _journal(tmp_path)
    data = path.read_bytes()
    store = FileStore("state")
    sealer = store.sealer(create=False)
    frames, _, _ = sealer.scan(data, len(_frames.MAGIC))
    mac = _frames.OVERHEAD - _frames.PAYLOAD_AT  # the signature follows the payload
    ends = [off + n + mac for off, n in frames]
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        plan = wf.plan()
        whole = sum(1 for e in ends if e <= cut) - 2  # minus the header and upstreams
        expect = {"a": 1, "b": 2, "c": 3}.items()
        restorable = {n for n, k in expect if k <= whole}
        if "a" not in restorable:
            restorable = set()
        assert set(plan.restored) == restorable, cut
    path.write_bytes(data[: ends[3] + 5])  # header, upstreams, a, b whole; c cut short
    fail.clear()
    calls.clear()
    result = wf.run()
    assert result.ok and result.resumed and calls == ["c", "d"]


def test_a_corrupt_run_is_set_aside_and_the_next_run_starts_fresh(opts, tmp_path, capsys):
    """A flipped byte inside the journal: nothing is unpickled; the plan says the run is
    damaged; the next run moves it to state/quarantine/ with a note (a warning names the
    file), starts fresh and succeeds; `flowforge history` lists it as quarantined. A
    damaged run never blocks the runs after it."""
    import json

    from flowforge.cli import main

    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    failed = wf.run()
    path = _journal(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    plan = wf.plan()
    assert plan.run_id is None and any("is damaged" in n and "corrupt" in n
                                       for n in plan.notes), plan.notes
    fail.clear()
    calls.clear()
    with pytest.warns(UserWarning, match=f"run {failed.run_id} was damaged .*{path}"):
        result = wf.run()
    assert result.ok and not result.resumed and calls == ["a", "b", "c", "d"]
    moved = tmp_path / "state" / "quarantine" / path.parent.name / path.name
    assert moved.read_bytes() == bytes(data) and not path.exists()  # the evidence stays
    capsys.readouterr()
    assert main(["--state-dir", str(tmp_path / "state"), "history", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows if r["run_id"] == failed.run_id] == ["quarantined"]


def test_a_damaged_length_in_a_middle_record_is_corruption_not_a_torn_tail(opts, tmp_path):
    """A flipped bit in a middle record's length field (which makes it run past the end
    of the file) is corruption: it is refused, and the journal keeps every byte; only a
    half-written record at the very end counts as torn."""
    from flowforge.persistence import _frames as frames

    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    path = _journal(tmp_path)
    data = path.read_bytes()
    key = (tmp_path / "state" / frames.KEY_FILE).read_bytes()
    found, _, problem = frames.Sealer(key).scan(data, len(frames.MAGIC))
    assert problem is None and len(found) >= 3
    middle = found[1][0] - frames.PAYLOAD_AT  # the second record's first byte
    damaged = bytearray(data)
    damaged[middle] ^= 0x01  # its length now claims 16 MiB more than it has
    path.write_bytes(bytes(damaged))
    plan = wf.plan()
    assert plan.run_id is None and any("corrupt" in n for n in plan.notes), plan.notes
    assert path.read_bytes() == bytes(damaged)  # nothing truncated: the evidence stays
    path.write_bytes(data[:-7])  # a crash while the last record was written
    fail.clear()
    resumed = wf.run()
    assert resumed.ok and resumed.resumed


def test_record_signed_with_another_key_is_refused_before_unpickling(opts, tmp_path):
    """A record whose checksum holds but whose HMAC does not is refused unread."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    path = _journal(tmp_path)
    evil = _frames.Sealer(b"k" * 32).seal(pickle.dumps("anything"))
    with open(path, "ab") as f:
        f.write(evil)
    with pytest.raises(StateError, match="not signed with this state folder's key"):
        wf.plan()


def test_state_from_a_newer_format_is_refused(opts, tmp_path):
    """A journal header with a newer format version says to upgrade."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    path = _journal(tmp_path)
    sealer = FileStore("state").sealer(create=False)
    path.write_bytes(_frames.MAGIC + sealer.seal(b'{"format": 99}'))
    with pytest.raises(StateError, match="newer than this FlowForge reads"):
        wf.run()


def test_a_file_that_is_not_state_is_refused(opts, tmp_path):
    """A journal without the FlowForge marker is named and not read."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    _journal(tmp_path).write_bytes(b"\x80\x05 this is some pickle, not state")
    with pytest.raises(StateError, match="not a FlowForge state file"):
        wf.run()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_state_owned_by_another_user_is_refused(opts, tmp_path):
    """A journal owned by another user is refused with a message naming both users."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    os.chown(_journal(tmp_path), 12345, 12345)
    with pytest.raises(StateError, match="belongs to user id 12345"):
        wf.run()


def test_group_writable_state_and_readable_key_are_refused(opts, tmp_path):
    """A state file others may write, or a key others may read, is not trusted."""
    calls, fail = [], {"d"}
    wf = diamond("w", calls, fail, opts=opts, store="files")
    wf.run()
    path = _journal(tmp_path)
    path.chmod(0o620)
    with pytest.raises(StateError, match="can be written by other users"):
        wf.run()
    path.chmod(0o600)
    key = tmp_path / "state" / _frames.KEY_FILE
    key.chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        wf.run()


class _FullDiskStore(FileStore):
    """A file store whose disk fills up after ``room`` task records."""

    def __init__(self, *args, room, **kwargs):
        super().__init__(*args, **kwargs)
        self.room = room

    def open_journal(self, workflow, run_id, scan):
        journal = super().open_journal(workflow, run_id, scan)
        inner = journal.append
        store = self

        def append(payload):
            if payload[:1] == b"T":
                if store.room <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                store.room -= 1
            return inner(payload)

        journal.append = append  # type: ignore[method-assign]
        return journal


def test_full_disk_stops_the_run_with_a_clear_error_and_loses_nothing(opts, tmp_path):
    """ENOSPC while saving stops the run (StateError naming the file); what was saved
    before is restored by the next run."""
    calls = []
    wf = diamond("w", calls, set(), opts=opts, store=_FullDiskStore("state", room=2))
    result = wf.run()
    assert result.status == "failed" and isinstance(result.error, StateError)
    assert "No space left on device" in str(result.error) and "journal" in str(result.error)
    assert calls == ["a", "b", "c"]  # nothing started after the failed save
    calls.clear()
    wf2 = diamond("w", calls, set(), opts=opts, store="files")
    again = wf2.run()
    assert again.ok and again.resumed and calls == ["c", "d"]


_HOLD_LOCK = """
import sys, time
from flowforge.persistence.files import FileStore
from flowforge.persistence.sqlite import SQLiteStore
store = (FileStore if sys.argv[1] == "files" else SQLiteStore)("state")
with store.lock("w"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_process_gets_workflow_locked_error_until_the_holder_dies(opts, store):
    """While another live process runs the workflow, run() fails at once naming it; a
    holder killed with SIGKILL leaves nothing that blocks the next run."""
    env = {**os.environ, "PYTHONPATH": REPO}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, store], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        calls = []
        wf = diamond("w", calls, set(), opts=opts, store=store)
        with pytest.raises(WorkflowLockedError, match=f"process {holder.pid}") as info:
            wf.run()
        assert info.value.pid == holder.pid and calls == []
    finally:
        holder.kill()
        holder.wait()
    assert wf.run().ok


_DIE_MID_RUN = """
import os, signal
from flowforge import workflow, task
with workflow("w", executor="sequential", quiet=True, progress=False, state_store={store!r}) as wf:
    @task
    def a():
        return 1
    @task
    def b(a):
        if not os.path.exists("go"):
            os.kill(os.getpid(), signal.SIGKILL)
        return a + 1
r = wf.run()
print(r.status, r.resumed, r["b"])
"""


def test_a_killed_run_is_listed_as_interrupted_and_resumed(tmp_path, store):
    """kill -9 mid-run: the run is listed as interrupted; the next run resumes it."""
    env = {**os.environ, "PYTHONPATH": REPO}
    script = _DIE_MID_RUN.format(store=store)
    dead = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert dead.returncode == -9
    runs = PersistenceManager("state", store=store).runs()
    assert [r.status for r in runs] == ["interrupted"]
    open("go", "w").close()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["succeeded", "True", "2"], done.stderr


def test_a_run_in_progress_is_listed_as_running(opts, store):
    """runs() says running for a live run, and listing never disturbs its lock."""
    seen = []
    with workflow("w", executor="sequential", state_store=store, **opts) as wf:

        @task
        def a():
            seen.extend(r.status for r in PersistenceManager("state", store=store).runs("w"))
            return 1

    assert wf.run().ok and seen == ["running"]
    assert [r.status for r in PersistenceManager("state", store=store).runs("w")] == ["succeeded"]


def test_unreadable_sqlite_database_is_named(opts, tmp_path):
    """A damaged SQLite state database is a StateError naming the file and the fix."""
    calls = []
    diamond("w", calls, {"d"}, opts=opts, store="sqlite").run()
    db = tmp_path / "state" / "flowforge.sqlite3"
    for extra in tmp_path.glob("state/flowforge.sqlite3-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="flowforge.sqlite3 cannot be read") as info:
        diamond("w", calls, set(), opts=opts, store="sqlite").run()
    assert "move it aside" in str(info.value)


def test_every_state_file_starts_with_a_versioned_header(opts, tmp_path):
    """Journal, run summary and blob each start with the marker and a header naming the
    format, Python and cloudpickle versions."""
    import json

    with workflow("w", executor="sequential", **opts) as wf:

        @task
        def a():
            return b"x" * (1 << 21)

    wf.run()
    store = FileStore("state")
    sealer = store.sealer(create=False)
    folder = tmp_path / "state" / "w"
    files = [*folder.glob("*.journal"), *folder.glob("*.run"), *folder.glob("*.blobs/*.pkl")]
    assert len(files) == 3
    for path in files:
        data = path.read_bytes()
        assert data.startswith(_frames.MAGIC)
        frames, _, problem = sealer.scan(data, len(_frames.MAGIC))
        assert problem is None
        off, n = frames[0]
        head = json.loads(data[off : off + n])
        assert head["format"] == _frames.FORMAT_VERSION
        assert head["python"] == _frames.current_versions()["python"]
        assert head["cloudpickle"] == _frames.current_versions()["cloudpickle"]


def test_runs_saved_by_an_older_state_format_do_not_block_new_runs(opts, tmp_path, caplog):
    """A run summary in an older format is left out of the run list with a warning; the
    workflow runs fresh."""
    calls = []
    wf = diamond("w", calls, set(), opts=opts, store="files")
    old = tmp_path / "state" / "w" / "20200101T000000-abcdef.run"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"FLOWFORGE-STATE\n" + b"\0" * 40)
    old.chmod(0o600)
    result = wf.run()
    assert result.ok and not result.resumed
    assert "state format 1" in caplog.text
    assert [r.run_id for r in PersistenceManager("state").runs()] == [result.run_id]
