"""Handing a large NumPy array from one process task to the next.

Task A makes a 200 MB array and notes the time as it returns it; task B reads one byte of
every page and notes the time as it ends. The hand-off is the time between the two, less
what B's reading takes on an array already in memory: pickling, pipes or files, the
driver in between, and mapping or unpickling in B. Worker start-up is not counted: two
tasks first import NumPy in both workers.

Rows: FlowForge's process executor (autosave off: the array goes through ``/dev/shm``;
autosave on: through its file in the state folder), loky and ``concurrent.futures``
(pickled through a pipe twice), and an in-process copy.

Run with ``python -m benchmarks.resultfiles`` (``--quick`` for a 20 MB array).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from benchmarks._timing import compile_sources, median_seconds

SIZE = 200_000_000


def make(n: int) -> np.ndarray:
    return np.full(n, 1, dtype=np.uint8)


def touch(a: np.ndarray) -> int:
    return int(a[::4096].sum())


def produce(n: int) -> dict[str, object]:
    array = make(n)
    return {"array": array, "t": time.time()}


def warm() -> float:
    """Import NumPy and hold the worker a moment, so each of the two workers gets one."""
    time.sleep(0.05)
    return float(np.zeros(1).sum())


def consume(produced: dict[str, object]) -> tuple[float, int]:
    total = touch(produced["array"])  # type: ignore[arg-type]
    return time.time() - produced["t"], total  # type: ignore[operator]


def _median_of(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def flowforge_run(n: int, executor: object, autosave: bool, state_dir: str) -> Callable[[], float]:
    from flowforge import task, workflow

    with workflow("handoff", executor=executor, autosave=autosave, state_dir=state_dir,
                  quiet=True, log_dir=None) as wf:
        @task
        def warm1() -> float:
            return warm()

        @task
        def warm2() -> float:
            return warm()

        @task(depends_on=[warm1, warm2])
        def a() -> dict[str, object]:
            return produce(n)

        @task
        def b(a: dict[str, object]) -> tuple[float, int]:
            return consume(a)

    def run() -> float:
        result = wf.run(fresh=True)
        assert result.ok, result.error
        elapsed, total = result["b"]
        assert total == -(-n // 4096)
        return elapsed

    return run


def pool_run(pool: concurrent.futures.Executor, n: int) -> Callable[[], float]:
    def run() -> float:
        for f in [pool.submit(warm), pool.submit(warm)]:
            f.result()
        produced = pool.submit(produce, n).result()
        elapsed, total = pool.submit(consume, produced).result()
        assert total == -(-n // 4096)
        return elapsed

    return run


def write_floor(n: int, path: str) -> float:
    """Seconds to write a new ``n``-byte array to ``path`` and keep it, as autosave does
    (run in a helper process, so the driver's memory figure stays its own)."""
    data = make(n)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def _in_process(n: int, repeat: int) -> tuple[float, float]:
    """B's own reading of an array in memory, and one in-process copy of it."""
    data = make(n)
    return median_seconds(lambda: touch(data), repeat), median_seconds(data.copy, repeat)


def _dask_rows(n: int, repeat: int) -> list[tuple[str, float]]:
    """FlowForge on a 2-worker Dask LocalCluster (kept up across repeats), autosave off
    and on: the array stays on the workers; with autosave its worker writes it."""
    try:
        from distributed import LocalCluster
    except ImportError:
        return []
    from flowforge import DaskExecutor

    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, \
            tempfile.TemporaryDirectory(prefix="ff-handoff-dask-") as tmp:
        for autosave in (True, False):
            ex = DaskExecutor(address=cluster.scheduler_address)
            secs = _median_of(flowforge_run(n, ex, autosave, tmp), repeat)
            rows.append((f"FlowForge on Dask, autosave {'on' if autosave else 'off'}", secs))
            if autosave:
                assert ex.fetched == 0, "the driver fetched a held result"
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print(f"Driver peak RSS after the Dask runs with autosave (scheduler in the "
                      f"same process, nothing fetched): {rss / 1024:.0f} MB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 20 MB array, 2 repeats")
    args = parser.parse_args(argv)
    if compile_sources():
        print("(bytecode caching is off here: FlowForge was byte-compiled first, as an "
              "installed copy is)", file=sys.stderr)
    n = SIZE // 10 if args.quick else SIZE
    repeat = 2 if args.quick else 5

    import loky

    from flowforge.executors import ProcessExecutor

    rows: list[tuple[str, float]] = []
    once_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ff-handoff-") as tmp:
        ex = ProcessExecutor(2)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        off = _median_of(flowforge_run(n, ex, False, tmp), repeat)
        on_run = flowforge_run(n, ex, True, tmp)
        on_times = []
        with concurrent.futures.ProcessPoolExecutor(1) as writer:
            for i in range(repeat):
                on_times.append(on_run())
                # The file-write floor, taken turn about with the autosave runs, so that
                # both meet the same amount of unwritten data in the page cache.
                path = os.path.join(tmp, f"floor-{i}.bin")
                once_times.append(writer.submit(write_floor, n, path).result())
        on = statistics.median(on_times)
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        dask_rows = _dask_rows(n, repeat)
    reading, copy = _in_process(n, repeat)
    once = statistics.median(once_times)
    rows.append(("FlowForge process, autosave off", off - reading))
    rows.append(("FlowForge process, autosave on", on - reading))
    lk = loky.get_reusable_executor(max_workers=2)
    lk.submit(int).result()
    rows.append(("loky (pickle + pipe)", _median_of(pool_run(lk, n), repeat) - reading))
    lk.shutdown(wait=True)
    with concurrent.futures.ProcessPoolExecutor(2) as cf:
        cf.submit(int).result()
        rows.append(("concurrent.futures", _median_of(pool_run(cf, n), repeat) - reading))
    rows.append(("in-process copy", copy))
    rows.extend((name, secs - reading) for name, secs in dask_rows)

    mb = n / 1e6
    print(f"\nHand-off of a {mb:.0f} MB NumPy array from task A to task B, 2 process workers "
          f"(median of {repeat}; B's own reading, {reading * 1e3:.1f} ms, subtracted)\n")
    print(f"| {'method':<34} | {'seconds':>8} | {'GB/s':>6} | {'vs loky':>7} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 8}|{'-' * 9}|")
    loky_s = rows[2][1]
    for name, secs in rows:
        secs = max(secs, 1e-6)
        print(f"| {name:<34} | {secs:>8.3f} | {n / secs / 1e9:>6.2f} | {loky_s / secs:>6.1f}x |")
    print(f"\nWriting the {mb:.0f} MB array to a new file in the same folder (the autosave "
          f"floor): {once:.3f} s; FlowForge with autosave on: {on - reading:.3f} s")
    print(f"Driver peak RSS over the FlowForge process runs: {rss_peak / 1024:.0f} MB "
          f"(before them: {rss_before / 1024:.0f} MB). With autosave off on Dask the "
          "driver fetches each result once, at the end, for the RunResult.")


if __name__ == "__main__":
    main()
