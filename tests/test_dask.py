"""The Dask executor on a real LocalCluster of worker processes: same results as the
sequential executor, a worker killed mid-task, GPU resources, a definition error for a
request no worker can meet."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("distributed")

from flowforge import Resources, Task, task, workflow  # noqa: E402
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
        with pytest.raises(ValueError, match="task 'train' needs Dask worker resources"):
            wf.run(executor=without)
    finally:
        without.shutdown()


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
