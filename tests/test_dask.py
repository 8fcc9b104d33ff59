"""The Dask executor on a real LocalCluster of worker processes: same results as the
sequential executor, a worker killed mid-task, GPU resources, a definition error for a
request no worker can meet."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("distributed")

from flowforge import Resources, Task, task, workflow  # noqa: E402
from flowforge.errors import WorkflowDefinitionError  # noqa: E402
from flowforge.executors.dask import DaskExecutor  # noqa: E402


def cluster(**options):
    return DaskExecutor(n_workers=2, threads_per_worker=1, processes=True, **options)


def build(opts, marker=None):
    with workflow("dk", autosave=False, **opts) as wf:

        @task
        def items():
            return list(range(6))

        @task(map="items", retries=1)
        def square(items):
            if marker is not None and items == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)  # the worker process dies under this item, once
            return items * items

        @task(when=lambda square: sum(square) > 10)
        def total(square):
            return sum(square)

        wf.add_task(Task("labels", lambda square: [f"#{v}" for v in square],
                         depends_on=["square"]))
    return wf


def test_results_match_the_sequential_executor(opts):
    """Maps, conditions and plain tasks give the same results on Dask workers."""
    expected = dict(build(opts).run(executor="sequential").results)
    ex = cluster()
    try:
        got = build(opts).run(executor=ex)
        assert got.ok, got.error
        assert dict(got.results) == expected
        workers = ex.workers() if ex._client is not None else []
    finally:
        ex.shutdown()
    assert workers == [] or all("address" in w for w in workers)


def test_a_worker_killed_mid_task_does_not_stop_the_run(opts, tmp_path):
    """A worker process that dies under an item: the item runs again and the run ends
    with the right results."""
    result = build(opts, marker=str(tmp_path / "died-once")).run(executor=cluster())
    assert result.ok, result.error
    assert result["square"] == [0, 1, 4, 9, 16, 25]
    assert (tmp_path / "died-once").exists()


def test_gpu_tasks_need_a_worker_that_offers_gpus(opts):
    """A GPU request runs on workers started with resources={"GPU": 1}; without such a
    worker the run refuses it before anything runs, naming the task and the fix."""
    with workflow("gpu", autosave=False, **opts) as wf:

        @task(resources=Resources(gpus=1))
        def train():
            return "trained"

    with_gpus = cluster(resources={"GPU": 1})
    try:
        assert wf.run(executor=with_gpus)["train"] == "trained"
    finally:
        with_gpus.shutdown()
    without = cluster()
    try:
        with pytest.raises(WorkflowDefinitionError,
                           match=r"task 'train' asks Resources \(gpus=1\), but no worker"):
            wf.run(executor=without)
    finally:
        without.shutdown()


def test_resources_work_on_the_local_cluster_flowforge_starts(opts):
    """executor="dask" starts a LocalCluster whose workers offer this machine's CPUs and
    memory as Dask resources, so tasks that declare Resources run; more than a worker
    has is a definition error naming the task."""
    with workflow("res", autosave=False, executor="dask", **opts) as wf:

        @task(resources=Resources(cpus=1, memory="64MiB"))
        def small():
            return "ran"

    assert wf.run()["small"] == "ran"
    with workflow("too-big", autosave=False, executor="dask", **opts) as big:

        @task(resources=Resources(memory="100TiB"))
        def huge():
            return "never"

    with pytest.raises(WorkflowDefinitionError, match=r"task 'huge' asks Resources \(memory="):
        big.run()


def test_flowforge_workers_lists_a_running_cluster(capsys):
    """`flowforge workers --address` reports each worker of a cluster it did not start."""
    import json

    from distributed import LocalCluster

    from flowforge.cli import main

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as lc:
        assert main(["workers", "--address", lc.scheduler_address, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 2 and all(r["threads"] == 1 for r in rows)
        assert lc.scheduler_info["workers"]  # still running: FlowForge left it alone


# -- results held on the workers -------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cluster():
    """One LocalCluster for several runs (given by address, so FlowForge leaves it up)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc:
        yield lc.scheduler_address


def test_random_dags_agree_with_every_result_held_on_workers(shared_cluster):
    """share_threshold=0 keeps every result on the workers, so every edge of a random DAG
    passes worker to worker; the results equal the sequential executor's."""
    from hypothesis import HealthCheck, given, settings

    from tests.test_properties import _build, random_dags

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(random_dags(max_tasks=30))
    def check(deps):
        expected = _build(deps, "sequential", None).run()
        ex = DaskExecutor(address=shared_cluster, share_threshold=0)
        got = _build(deps, ex, None).run()
        assert got.ok, got.error
        assert dict(got.results) == dict(expected.results)

    check()


def _array_flow(tmp_path, autosave, opts):
    np = pytest.importorskip("numpy")
    with workflow("held", state_dir=str(tmp_path / "state"), autosave=autosave,
                  **opts) as wf:
        @task
        def a():
            return np.arange(1 << 20, dtype=np.int64)  # 8 MB: held on its worker

        @task
        def b(a):
            return a * 2  # held too

        @task
        def c(b):
            return int(b.sum())

    return wf


@pytest.mark.parametrize("autosave", [True, False], ids=["autosave-on", "autosave-off"])
def test_large_results_pass_worker_to_worker(shared_cluster, tmp_path, opts, autosave):
    """Large results go from worker to worker as Dask futures: the driver fetches none
    while the run goes; with autosave each is saved by its worker, in the state folder."""
    from flowforge.events import TaskSucceeded

    wf = _array_flow(tmp_path, autosave, opts)
    ex = DaskExecutor(address=shared_cluster)
    fetched_when_c_ended = []
    wf.events.subscribe(
        TaskSucceeded,
        lambda e: fetched_when_c_ended.append(ex.fetched) if e.task == "c" else None,
    )
    result = wf.run(executor=ex)
    assert result.ok, result.error
    n = 1 << 20
    assert result["c"] == n * (n - 1)
    assert fetched_when_c_ended == [0]
    assert int(result["b"][-1]) == 2 * (n - 1)
    if autosave:
        from flowforge.persistence.journal import read_journal
        from flowforge.persistence.manager import PersistenceManager
        from flowforge.persistence.records import RESULT_FILE

        store = PersistenceManager(tmp_path / "state").store
        slots = read_journal(store, "held", result.run_id).slots
        assert slots["a"][1] == RESULT_FILE and slots["b"][1] == RESULT_FILE
        assert ex.fetched == 0  # the RunResult maps the saved files instead
    else:
        assert ex.fetched >= 2 * 8 * n  # a and b, fetched once each at the end


def test_driver_killed_mid_run_resumes_on_dask(tmp_path):
    """kill -9 of the driver while a Dask task runs: the next run restores the saved large
    result (from the file its worker wrote) and runs only what was left."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    from tests import fixture_dask_kill

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixture_dask_kill", str(tmp_path)],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "waiting").exists():
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the Dask run never reached 'wait'"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        for child in children:  # the killed driver's cluster: stop it, as a user would
            try:
                child.kill()
            except psutil.Error:
                pass
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "made").read_text() == "made\n"
    (tmp_path / "gate").touch()
    result = fixture_dask_kill.build(str(tmp_path)).run(executor=fixture_dask_kill.executor())
    assert result.ok and result.resumed, result.error
    assert result.tasks["make"].restored
    assert (tmp_path / "made").read_text() == "made\n"  # not made again
    n = 1 << 20
    assert result["wait"] == n * (n - 1) // 2
