"""Fixtures (@wf.fixture): made once on first use, handed to tasks by parameter
name, torn down after the run whatever happened; once per worker on the process executor."""

from __future__ import annotations

import os

import pytest

from flowforge import TaskError, WorkflowDefinitionError, task, workflow


@pytest.mark.parametrize("executor", ["sequential", "thread"])
@pytest.mark.parametrize("fail", [False, True])
def test_resource_is_made_once_and_torn_down_after_the_run(opts, executor, fail):
    """One set-up for every task that needs it, one tear-down at the end, even when a task
    fails; a plain function and a generator both work; resources may use params and each
    other, and tear down newest first."""
    events = []
    with workflow("w", executor=executor, max_workers=2, **opts) as wf:

        @wf.fixture
        def settings(region):
            events.append("settings")
            return {"region": region}

        @wf.fixture
        def db(settings):
            events.append("open db")
            conn = {"region": settings["region"], "queries": 0}
            yield conn
            events.append(f"close db after {conn['queries']} queries")

        @task
        def load(db):
            db["queries"] += 1
            return db["region"]

        @task
        def save(db, load):
            db["queries"] += 1
            if fail:
                raise RuntimeError("save failed")
            return load

    result = wf.run(params={"region": "eu"})
    assert result.status == ("failed" if fail else "succeeded")
    assert result["load"] == "eu"
    assert events == ["settings", "open db", "close db after 2 queries"]


def test_resource_set_up_failure_fails_only_the_tasks_that_need_it(opts):
    """A resource that cannot be made fails each task needing it, naming the resource."""
    with workflow("w", executor="sequential", on_error="continue", **opts) as wf:

        @wf.fixture
        def api():
            raise ConnectionError("api down")

        @task
        def fetch(api):
            return api

        @task
        def local():
            return "fine"

    result = wf.run()
    error = result.tasks["fetch"].error
    assert isinstance(error, TaskError) and error.fixture == "api"
    assert "fixture 'api' failed to set up (ConnectionError: api down)" in str(error)
    assert result["local"] == "fine"


def test_process_workers_make_their_own_resource_once_and_tear_it_down(opts, tmp_path):
    """On the process executor each worker makes the resource once, on first use, and tears
    it down when the pool shuts the worker down."""
    out = tmp_path / "teardown.txt"
    with workflow("w", executor="process", max_workers=2, **opts) as wf:

        @wf.fixture
        def conn():
            token = object()
            yield (os.getpid(), id(token))
            with open(out, "a") as f:
                f.write(f"{os.getpid()}\n")

        for i in range(6):
            task(name=f"t{i}")(lambda conn: conn)

    result = wf.run()
    assert result.ok
    seen = {result[f"t{i}"] for i in range(6)}
    pids = {pid for pid, _ in seen}
    assert len(seen) == len(pids)  # one resource per worker process, reused by its tasks
    assert os.getpid() not in pids
    assert sorted(out.read_text().split()) == sorted(str(p) for p in pids)


def test_resource_definition_errors_are_found_before_anything_runs(opts, tmp_path):
    """A task and a resource sharing a name, or a resource parameter nothing provides, are
    definition errors raised before any state is written."""
    with workflow("w", executor="sequential", **opts) as wf:

        @wf.fixture
        def db(dsn):
            return dsn

        @task
        def a(db):
            return db

    with pytest.raises(WorkflowDefinitionError, match="fixture 'db' has parameter 'dsn'"):
        wf.run()
    assert not (tmp_path / "state").exists()
    with workflow("w2", executor="sequential", **opts) as wf2:

        @task
        def db():
            return 1

    wf2.fixture(name="db")(lambda: 2)
    with pytest.raises(WorkflowDefinitionError, match="a task and a fixture both named 'db'"):
        wf2.run()


def test_the_old_resource_decorator_still_declares_a_fixture_with_a_warning(opts):
    """wf.resource, the last release's name, warns and declares the same fixture."""
    with workflow("w", **opts) as wf:
        with pytest.warns(DeprecationWarning, match="wf.resource is now wf.fixture"):
            @wf.resource
            def base():
                return 40

        @task
        def use(base):
            return base + 2

    assert wf.run(executor="sequential")["use"] == 42
