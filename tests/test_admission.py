"""Admission: CPU/memory/GPU requests within limits, pools, max_concurrent_tasks, rate
limits, GPU devices, and the waits they cause."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge import Task, TaskState, WorkflowDefinitionError, task, workflow
from flowforge.events import TaskWaiting
from flowforge.resources import RateLimit, ResourceLimits, Resources, parse_size
from flowforge.testing import RecordingListener


class Meter:
    """Counts what running tasks hold, and the most ever held at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = {"cpus": 0.0, "memory": 0, "tasks": 0}
        self.peak = dict(self.now)

    def enter(self, cpus, memory):
        with self.lock:
            self.now["cpus"] += cpus
            self.now["memory"] += memory
            self.now["tasks"] += 1
            for k, v in self.now.items():
                self.peak[k] = max(self.peak[k], v)

    def leave(self, cpus, memory):
        with self.lock:
            self.now["cpus"] -= cpus
            self.now["memory"] -= memory
            self.now["tasks"] -= 1


def metered(meter, cpus, memory, pause=0.003):
    def body():
        meter.enter(cpus, memory)
        time.sleep(pause)  # overlap on purpose; no assertion depends on its length
        meter.leave(cpus, memory)
        return cpus

    return body


@settings(max_examples=15, deadline=None)
@given(
    requests=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=14),
    cpu_limit=st.integers(4, 6),
    mem_limit=st.integers(3, 5),
)
def test_running_requests_never_exceed_the_limits_and_every_task_runs(
    requests, cpu_limit, mem_limit
):
    """For random requests and limits, what runs at once never exceeds the limits, and
    every task (big ones too) runs."""
    meter = Meter()
    with workflow("a", executor="thread", max_workers=6, log_dir=None, quiet=True,
                  progress=False, autosave=False,
                  limits=ResourceLimits(cpus=cpu_limit, memory=mem_limit * 1000)) as wf:
        for i, (cpus, mem) in enumerate(requests):
            wf.add_task(Task(f"t{i}", metered(meter, cpus, mem * 1000),
                             resources=Resources(cpus=cpus, memory=mem * 1000)))
    result = wf.run()
    assert result.ok
    assert meter.peak["cpus"] <= cpu_limit and meter.peak["memory"] <= mem_limit * 1000
    assert result.metrics.peak["cpus"] <= cpu_limit


def test_a_request_that_can_never_fit_is_a_definition_error(opts, tmp_path):
    """Asking for more than the limits allow fails before anything runs or is saved."""
    with workflow("w", limits=ResourceLimits(cpus=2, gpus=1), **opts) as wf:

        @task(resources=Resources(cpus=3))
        def big():
            return 1

    with pytest.raises(WorkflowDefinitionError, match="task 'big' asks for 3 CPUs, but the "
                       "run may use 2"):
        wf.run()
    assert not (tmp_path / "state").exists()
    with pytest.raises(WorkflowDefinitionError, match="asks for 2 GPUs, but the run has 1"):
        with workflow("g", limits=ResourceLimits(gpus=1), **opts) as g:
            task(resources=Resources(gpus=2))(lambda: 1)
        g.validate()


def test_pools_and_max_concurrent_tasks(opts):
    """concurrency={"db": 2} lets two db tasks run at once; max_concurrent_tasks bounds
    every task; waiting tasks say why with TaskWaiting and their waited time."""
    meter = Meter()
    with workflow("w", executor="thread", max_workers=8, concurrency={"db": 2},
                  limits=ResourceLimits(max_concurrent_tasks=3), **opts) as wf:
        for i in range(6):
            wf.add_task(Task(f"q{i}", metered(meter, 0, 0, pause=0.02), tags=["db"]))
    rec = RecordingListener.attach_to(wf)
    result = wf.run()
    assert result.ok and meter.peak["tasks"] == 2
    waits = rec.of_type(TaskWaiting)
    assert waits and all("'db' pool is full (2 running)" in w.reason for w in waits)
    assert sum(m.waited for m in result.metrics.tasks.values()) > 0


def test_rate_limit_spaces_starts_evenly(opts):
    """20 calls at "10/s" take between 1.8 and 2.5 s; a shared named limit counts every
    task tagged with it."""
    starts = []
    with workflow("w", executor="sequential", rate_limits={"api": RateLimit("10/s")},
                  **opts) as wf:
        for i in range(20):
            wf.add_task(Task(f"c{i}", lambda: starts.append(time.monotonic()), tags=["api"]))
    t0 = time.monotonic()
    assert wf.run().ok
    assert 1.8 <= time.monotonic() - t0 <= 2.5
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.09


def test_a_task_rate_limit_of_its_own(opts):
    """@task(rate_limit=...) limits that task's own attempts (its map items here)."""
    with workflow("w", executor="thread", max_workers=4, **opts) as wf:

        @task
        def items():
            return list(range(4))

        @task(map="items", rate_limit="20/s")
        def call(items):
            return time.monotonic()

    result = wf.run()
    stamps = sorted(result["call"])
    assert stamps[-1] - stamps[0] >= 3 * 0.05 - 0.01


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_gpu_devices_are_assigned_and_never_shared(opts, executor, tmp_path):
    """Each GPU task gets its own device (ctx.gpus; CUDA_VISIBLE_DEVICES on process
    workers); two half-GPU tasks may share one."""
    log = tmp_path / "gpus.log"
    with workflow("w", executor=executor, max_workers=4,
                  limits=ResourceLimits(gpus=2), **opts) as wf:
        for i in range(4):

            def body(ctx, _log=str(log)):
                seen = os.environ.get("CUDA_VISIBLE_DEVICES")
                with open(_log, "a") as f:
                    f.write(f"{ctx.task} {ctx.gpus} {seen}\n")
                time.sleep(0.02)
                return ctx.gpus

            wf.add_task(Task(f"g{i}", body, resources=Resources(gpus=1)))
        for i in range(2):
            wf.add_task(Task(f"h{i}", lambda ctx: ctx.gpus, resources=Resources(gpus=0.5)))
    result = wf.run()
    assert result.ok
    for i in range(4):
        assert result[f"g{i}"] in ([0], [1])
    for i in range(2):
        assert result[f"h{i}"] in ([0], [1])
    lines = log.read_text().splitlines()
    if executor == "process":
        assert all(line.split()[-1] == line.split()[1].strip("[]") for line in lines)
    assert result.metrics.peak["gpus"] <= 2


def test_sizes_parse_in_both_unit_systems():
    """'512MB' is powers of 1000, '16GiB' powers of 1024; nonsense is a clear error."""
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("16GiB") == 16 * 2**30
    assert parse_size(1024) == 1024
    with pytest.raises(WorkflowDefinitionError, match="is not a size"):
        parse_size("lots")
    with pytest.raises(WorkflowDefinitionError, match="is not a rate"):
        RateLimit("5 per second")


def test_a_task_over_its_memory_request_is_killed_and_the_run_goes_on(opts):
    """On the process executor, a task allocating 400 MB with memory="100MB" fails with
    MemoryLimitExceeded (naming the limit and the peak), its retry too; the other tasks
    succeed."""
    from flowforge import MemoryLimitExceeded

    with workflow("w", executor="process", max_workers=2, on_error="continue", **opts) as wf:

        @task(resources=Resources(memory="100MB"), retries=1)
        def hog():
            block = bytearray(400 * 10**6)
            for i in range(0, len(block), 4096):  # touch every page: make it resident
                block[i] = 1
            time.sleep(5)  # the watcher kills it long before this ends
            return len(block)

        @task(resources=Resources(memory="200MB"))
        def modest():
            return len(bytearray(10**6))

        @task
        def other():
            return "fine"

    t0 = time.monotonic()
    result = wf.run()
    assert time.monotonic() - t0 < 9
    error = result.tasks["hog"].error
    assert isinstance(error, MemoryLimitExceeded)
    assert result.tasks["hog"].attempts == 2  # the retry was watched (and killed) too
    assert error.limit == 100 * 10**6 and error.peak > error.limit
    assert "over its memory=95 MiB" in str(error)
    assert result["modest"] == 10**6 and result["other"] == "fine"


def _admission(**kw):
    from flowforge._engine.admission import Admission
    from flowforge._private.gpus import StaticInventory

    gpus = kw.pop("inventory", StaticInventory(0))
    return Admission(ResourceLimits(**kw), gpus=gpus, machine_memory=2**34, machine_cpus=8.0)


def test_a_big_request_passed_over_too_often_reserves_the_run():
    """Small tasks may pass a big one, but after MAX_PASSES it goes first."""
    from flowforge._engine.admission import MAX_PASSES, Request, Wait

    adm = _admission(cpus=4)
    small, big = Request(cpus=1), Request(cpus=4)
    held = adm.acquire("s", small)
    for _ in range(MAX_PASSES):
        assert isinstance(adm.acquire("big", big), Wait)
    assert "waiting behind 'big'" in adm.acquire("s2", small).reason
    adm.release(held)
    grant = adm.acquire("big", big)
    assert not isinstance(grant, Wait)
    adm.release(grant)
    assert not isinstance(adm.acquire("s2", small), Wait)


def test_gpu_memory_is_checked_against_what_nvml_says_is_free():
    """A gpu_memory request goes to a device with that much free (read through the GPU
    inventory interface, faked here)."""
    from flowforge._engine.admission import Request, Wait
    from flowforge._private.gpus import StaticInventory

    adm = _admission(gpus=2, inventory=StaticInventory(2, free={0: 2 * 2**30, 1: 20 * 2**30}))
    grant = adm.acquire("fit", Request(gpus=0.5, gpu_memory=8 * 2**30))
    assert not isinstance(grant, Wait) and grant.gpus == (1,)
    assert isinstance(adm.acquire("too big", Request(gpus=0.5, gpu_memory=16 * 2**30)), Wait)


def test_nvml_without_a_gpu_means_zero_gpus_and_no_noise(capsys):
    """On a machine without a GPU or driver the real NVML inventory reports 0, quietly."""
    from flowforge._private.gpus import NvmlInventory

    inv = NvmlInventory()
    count = inv.count()
    assert count >= 0
    if count == 0:
        assert inv.free_memory(0) is None
    assert capsys.readouterr() == ("", "")


def test_rate_limits_on_the_fake_clock_space_starts_without_spinning(opts):
    """With flowforge.testing.FakeClock, a "10/s" limit starts tasks at 0.0, 0.1, ...
    (float dust in the token bucket must not make the engine spin)."""
    from flowforge.testing import FakeClock

    clock = FakeClock()
    starts = []
    with workflow("w", executor="sequential", clock=clock,
                  rate_limits={"api": RateLimit("10/s")}, **opts) as wf:
        for i in range(5):
            wf.add_task(Task(f"c{i}", lambda: starts.append(clock.monotonic()), tags=["api"]))
    assert wf.run().ok
    assert [round(s - starts[0], 6) for s in starts] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_fractional_gpu_shares_leave_no_float_dust():
    """After 0.1 and 0.2 of a GPU are released, a whole-GPU request fits again."""
    from flowforge._engine.admission import Request, Wait

    adm = _admission(gpus=1)
    grants = [adm.acquire(n, Request(gpus=g)) for n, g in (("a", 0.1), ("b", 0.2))]
    for g in grants:
        adm.release(g)
    assert not isinstance(adm.acquire("whole", Request(gpus=1)), Wait)


def test_units_of_a_failed_map_are_never_admitted_so_nothing_leaks(opts):
    """Under on_error="continue" the items of a mapped task that failed never start and
    never take a place in max_concurrent_tasks: a task waiting behind them still runs."""
    with workflow("leak", executor="thread", max_workers=4, on_error="continue",
                  limits=ResourceLimits(max_concurrent_tasks=2), **opts) as wf:

        @task
        def items():
            return list(range(4))

        @task(map="items")
        def m(items):
            if items == 0:
                raise ValueError("boom")
            time.sleep(0.2)
            return items

        @task
        def slow():
            time.sleep(0.6)

        @task
        def later(slow):
            return "ran"

    result = wf.run()
    assert result.tasks["m"].state is TaskState.FAILED
    assert result.tasks["later"].state is TaskState.SUCCEEDED, result.tasks["later"].error


def test_a_waiting_unit_reports_its_own_attempt_number(opts):
    """TaskWaiting for a map item names that item's next attempt, not its task's."""
    with workflow("waits", executor="thread", max_workers=4,
                  limits=ResourceLimits(max_concurrent_tasks=1), **opts) as wf:

        @task
        def items():
            return [1, 2, 3]

        @task(map="items")
        def m(items):
            return items

    rec = RecordingListener.attach_to(wf)
    assert wf.run().ok
    waits = rec.of_type(TaskWaiting)
    assert waits and all(w.attempt == 1 and w.index is not None for w in waits)
