"""Hardening items of the state folder (issue: state that must not lie): temporary files
that cannot be redirected, and a lock error that always names its holder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowforge.persistence import _frames

REPO = str(Path(__file__).resolve().parents[1])


def test_an_atomic_write_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    """Another user who guesses the temporary name and plants a symlink there cannot
    make a run write through it: the write fails and the target is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setattr(_frames.secrets, "token_hex", lambda n=None: "guessed")
    target = state / ".lock.owner"
    os.symlink(victim, str(target) + ".guessed.tmp")
    with pytest.raises(FileExistsError):
        _frames.write_atomic(str(target), b"{}", fsync=False)
    assert victim.read_text() == "precious" and not target.exists()


HOLDER = textwrap.dedent('''
    import sys, time
    from flowforge import task, workflow
    from flowforge.errors import WorkflowLockedError

    with workflow("locked", executor="sequential", quiet=True, progress=False) as wf:
        @task
        def hold():
            time.sleep(3)
            return 1

    try:
        wf.run()
        print("RAN")
    except WorkflowLockedError as exc:
        print("LOCKED", exc.pid, exc.message)
''')


def test_every_refused_start_names_the_process_holding_the_lock(tmp_path):
    """Eight starts at once: one runs, and each of the others is refused naming the
    holder's pid (before: "another process" in about half of them)."""
    (tmp_path / "holder.py").write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "holder.py"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = []
    deadline = time.monotonic() + 120
    for p in procs:
        out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        outs.append((p.pid, out.strip(), err))
    ran = [pid for pid, out, _ in outs if out == "RAN"]
    assert len(ran) == 1, outs
    refused = [out for _, out, _ in outs if out.startswith("LOCKED")]
    assert len(refused) == 7, outs
    for out in refused:
        assert out.split()[1] == str(ran[0]), out
        assert f"process {ran[0]}" in out


LAUGHS = """name: laughs
tasks:
  - id: a
    call: tests.fixture_definition:double
    with:
      x: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
      y: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]
      z: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]
      w: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]
      v: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]
      u: &l5 [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]
      t: &l6 [*l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5]
      s: &l7 [*l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6]
"""


def test_nested_yaml_aliases_are_refused_at_once_with_the_line(tmp_path):
    """A few hundred bytes of nested aliases (a "billion laughs") are refused in well
    under a second, naming the file and line, by `flowforge validate` (exit 2)."""
    bad = tmp_path / "laughs.yaml"
    bad.write_text(LAUGHS)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flowforge", "validate", str(bad)],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{bad}:" in done.stderr and "more than 10,000 values through its aliases" \
        in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - t0 < 10


def test_a_second_scheduler_on_the_same_state_folder_exits_naming_the_first(tmp_path):
    """`flowforge schedule` twice on one state folder: the second exits 1 at once with
    the first's pid, and the job table is as the first left it."""
    flow = tmp_path / "flow.py"
    flow.write_text(textwrap.dedent('''
        from flowforge import task, workflow

        with workflow("sched-lock", quiet=True, progress=False) as wf:
            @task
            def a():
                return 1
    '''))
    env = {**os.environ, "PYTHONPATH": REPO}
    first = subprocess.Popen(
        [sys.executable, "-m", "flowforge", "schedule", str(flow), "--cron", "@yearly"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "Ctrl-C stops it" in first.stderr.readline()
        table = (tmp_path / "state" / "scheduler" / "jobs.json").read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "flowforge", "schedule", str(flow), "--cron", "@daily",
             "--name", "other"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"another scheduler (process {first.pid})" in second.stderr
        assert (tmp_path / "state" / "scheduler" / "jobs.json").read_bytes() == table
    finally:
        first.terminate()
        first.wait(30)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("last_fire", "yesterday", "last_fire must be an ISO 8601 time with its offset"),
    ("enabled", "no", "enabled must be true or false"),
    ("schedule", ["x"], "schedule must be text"),
])
def test_a_bad_job_table_names_the_file_the_job_and_the_field(tmp_path, field, value, words):
    import json

    from flowforge import Scheduler
    from flowforge.errors import StateError

    table = tmp_path / "state" / "scheduler" / "jobs.json"
    table.parent.mkdir(parents=True)
    table.write_text(json.dumps({"nightly": {"name": "nightly", field: value}}))
    with pytest.raises(StateError) as err:
        Scheduler(str(tmp_path / "state"))
    assert f"{table}: job 'nightly': {words}" in str(err.value)


def test_a_far_future_last_fire_is_an_error_not_a_silent_pause(tmp_path):
    import json
    from datetime import datetime, timezone

    from flowforge import ScheduleError, Scheduler, task, workflow

    with workflow("nightly", quiet=True, progress=False, state_dir=str(tmp_path / "state"),
                  log_dir=None) as wf:
        @task
        def a():
            return 1

    now = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    sched = Scheduler(str(tmp_path / "state"), clock=lambda: now)
    sched.add(wf, cron="0 0 * * *")
    table = tmp_path / "state" / "scheduler" / "jobs.json"
    rows = json.loads(table.read_text())
    rows["nightly"]["last_fire"] = "2099-01-01T00:00:00+00:00"
    table.write_text(json.dumps(rows))
    with pytest.raises(ScheduleError, match="last_fire 2099-01-01T00:00:00\\+00:00 is in the"):
        Scheduler(str(tmp_path / "state"), clock=lambda: now).add(wf, cron="0 0 * * *")


@pytest.mark.parametrize(("expression", "words"), [
    ("('x' * 1000000) * 1000", "would build a string of 1,000,000,000 characters"),
    ("'%1500000000d' % 1", "a % field width or precision of 1500000000 is over the limit"),
    ("(" * 50_000 + "1" + ")" * 50_000, "nests more than 100 levels deep"),
    ("[0] * 1000000 + [1] * 1000000", "would build a list of 2,000,000 items"),
])
def test_expressions_that_would_explode_are_refused_at_load_with_the_line(
    tmp_path, expression, words
):
    """Checked before anything is built: a definition error naming file and line, in
    well under a second and without a MemoryError or RecursionError."""
    bad = tmp_path / "bomb.yaml"
    bad.write_text("name: bomb\ntasks:\n  - id: a\n    call: tests.fixture_definition:double\n"
                   f'    with: {{x: "${{{expression}}}"}}\n')
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flowforge", "validate", str(bad)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout
    assert f"{bad}:3: task 'a':" in done.stderr and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - t0 < 20


def test_allow_module_restricts_what_a_definition_may_call(tmp_path):
    """`call: os:system` runs under a plain `flowforge run` (definitions are code), but
    not with --allow-module or FLOWFORGE_ALLOWED_MODULES: refused before the import."""
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: evil\ntasks:\n  - id: a\n    call: os:system\n"
                    "    with: {command: \"touch pwned\"}\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("FLOWFORGE_ALLOWED_MODULES", None)
    refused = subprocess.run(
        [sys.executable, "-m", "flowforge", "run", str(evil), "--allow-module", "tests"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "call: os:system is not allowed here" in refused.stderr
    assert not (tmp_path / "pwned").exists()
    by_env = subprocess.run(
        [sys.executable, "-m", "flowforge", "validate", str(evil)], cwd=tmp_path,
        env={**env, "FLOWFORGE_ALLOWED_MODULES": "tests.fixture_definition"},
        capture_output=True, text=True, timeout=60)
    assert by_env.returncode == 2 and "not allowed here" in by_env.stderr
    wider = subprocess.run(
        [sys.executable, "-m", "flowforge", "run", str(evil), "--allow-module", "os"],
        cwd=tmp_path, env={**env, "FLOWFORGE_ALLOWED_MODULES": "tests"},
        capture_output=True, text=True, timeout=60)
    assert wider.returncode == 2 and "--allow-module os is outside" in wider.stderr
    assert not (tmp_path / "pwned").exists()
    good = tmp_path / "good.yaml"
    good.write_text("name: good\ntasks:\n  - id: a\n    call: tests.fixture_definition:double\n"
                    "    with: {x: 2}\n")
    ok = subprocess.run(
        [sys.executable, "-m", "flowforge", "run", str(good), "--allow-module", "tests"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(("mode", "words"), [
    (0o777, "can be written by any user (mode 0o777)"),
    (0o770, "can be written by its group (mode 0o770)"),
])
def test_a_state_folder_others_can_write_is_refused(tmp_path, mode, words):
    from flowforge import task, workflow
    from flowforge.errors import StateError

    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with workflow("perm", state_dir=str(state), log_dir=None, quiet=True,
                  progress=False) as wf:
        @task
        def a():
            return 1

    with pytest.raises(StateError) as err:
        wf.run()
    assert words in str(err.value) and f"chmod 700 {state}" in str(err.value)
    assert not list(state.iterdir())  # nothing was written there
    state.chmod(0o2770)  # a team's setgid folder: accepted, with a warning
    with pytest.warns(UserWarning, match="group-writable"):
        assert wf.run().ok


def test_a_journal_replaced_by_a_symlink_is_a_state_error_naming_it(tmp_path):
    from flowforge import task, workflow
    from flowforge.errors import StateError

    with workflow("linked", state_dir=str(tmp_path / "state"), log_dir=None, quiet=True,
                  progress=False) as wf:
        @task
        def a():
            raise RuntimeError("fail so that the next run resumes")

    wf.run()
    (journal,) = (tmp_path / "state").rglob("*.journal")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(journal.read_bytes())
    journal.unlink()
    journal.symlink_to(elsewhere)
    with pytest.raises(StateError, match=f"state file {journal} is a symbolic link"):
        wf.run()


def test_a_damaged_sqlite_schema_is_a_state_error_naming_the_database(tmp_path):
    """A dropped column (a damaged schema) was a raw OSError "no such column"."""
    import sqlite3

    from flowforge import task, workflow
    from flowforge.errors import StateError

    with workflow("sq", state_dir=str(tmp_path / "state"), state_store="sqlite",
                  log_dir=None, quiet=True, progress=False) as wf:
        @task
        def a():
            return 1

    assert wf.run().ok
    db = tmp_path / "state" / "flowforge.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE journal RENAME COLUMN frame TO damaged")
    with pytest.raises(StateError) as err:
        wf.run()
    assert f"state database {db} cannot be read" in str(err.value)
    assert "no column named frame" in str(err.value) and "move it aside" in str(err.value)


def test_a_journal_copied_over_another_runs_is_never_loaded(tmp_path):
    """Run A's journal copied over run B's: B's next run refuses it (the header names
    run A), sets B aside saying why, and computes its own values, not A's."""
    import shutil

    from flowforge import task, workflow

    gate = tmp_path / "go"
    with workflow("swap", executor="sequential", state_dir=str(tmp_path / "state"),
                  log_dir=None, quiet=True, progress=False) as wf:
        @task
        def base(n: int) -> int:
            return n * 100

        @task
        def last(base):
            if not gate.exists():
                raise RuntimeError("not yet")
            return base

    run_a = wf.run({"n": 1})
    run_b = wf.run({"n": 2})
    assert run_a.run_id != run_b.run_id and not run_a.ok and not run_b.ok
    folder = next((tmp_path / "state").glob("swap*"))
    shutil.copyfile(folder / f"{run_a.run_id}.journal", folder / f"{run_b.run_id}.journal")
    gate.touch()
    with pytest.warns(UserWarning, match=f"belongs to run '{run_a.run_id}', not run "
                                         f"'{run_b.run_id}'"):
        again = wf.run({"n": 2})
    assert again.ok and not again.resumed and again["last"] == 200
