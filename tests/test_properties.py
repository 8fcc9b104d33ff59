"""Property tests over random DAGs: every executor runs each task exactly once, after its
upstreams, and all executors agree on the results."""

from __future__ import annotations

import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowforge import Task, Workflow


@st.composite
def random_dags(draw, max_tasks=250):
    n = draw(st.integers(min_value=1, max_value=max_tasks))
    deps = []
    for i in range(n):
        if i == 0:
            deps.append([])
            continue
        k = draw(st.integers(min_value=0, max_value=min(3, i)))
        deps.append(sorted(set(draw(st.lists(st.integers(0, i - 1), min_size=k, max_size=k)))))
    return deps


def _value(name, inputs):
    import zlib

    return zlib.crc32(repr((name, sorted(inputs.items()))).encode())


def _build(deps, executor, log):
    wf = Workflow("prop", executor=executor, max_workers=2, log_dir=None, quiet=True,
                  progress=False)
    lock = threading.Lock()
    for i, ups in enumerate(deps):
        name = f"t{i}"

        if log is None:  # process workers: no shared lock or log to close over

            def fn(_name=name, **inputs):
                return _value(_name, inputs)

        else:

            def fn(_name=name, **inputs):
                with lock:
                    log.append((_name, time.perf_counter_ns()))
                return _value(_name, inputs)

        wf.add_task(Task(name, fn, depends_on=[f"t{u}" for u in ups]))
    return wf


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags())
def test_in_process_executors_agree(deps):
    """Sequential and thread runs execute each task once, in order, with equal results."""
    outcomes = []
    for executor in ("sequential", "thread"):
        log = []
        result = _build(deps, executor, log).run()
        assert result.ok
        names = [n for n, _ in log]
        assert sorted(names) == sorted(f"t{i}" for i in range(len(deps)))
        assert len(names) == len(set(names))
        started = {n: i for i, (n, _) in enumerate(log)}
        for i, ups in enumerate(deps):
            for u in ups:
                assert started[f"t{u}"] < started[f"t{i}"]
        outcomes.append(result.results)
    assert outcomes[0] == outcomes[1]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags(max_tasks=25))
def test_process_executor_agrees(deps):
    """The process executor gives the same results as the sequential one."""
    expected = _build(deps, "sequential", None).run()
    got = _build(deps, "process", None).run()
    assert got.ok and got.results == expected.results
    assert all(t.attempts == 1 for t in got.tasks.values())
