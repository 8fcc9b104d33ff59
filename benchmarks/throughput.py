"""Throughput of many tiny tasks on 2 process workers.

10,000 no-op tasks as the items of one map, on FlowForge's process executor (with its
per-task events, retries and, in one row, autosave), next to loky's and
``concurrent.futures``' ``map`` over the same function. Every row starts its own two
workers inside the timed region, as a FlowForge run does.

Run with ``python -m benchmarks.throughput`` (``--quick`` for 2,000 tasks).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks._timing import compile_sources

WORKERS = 2


def noop(x: int) -> int:
    return x


def flowforge_map(n: int, autosave: bool, state_dir: str) -> Callable[[], None]:
    from flowforge import task, workflow

    with workflow("tiny", executor="process", max_workers=WORKERS, autosave=autosave,
                  state_dir=state_dir, log_dir=None, quiet=True) as wf:
        @task
        def items() -> list[int]:
            return list(range(n))

        @task(map="items")
        def work(items: int) -> int:
            return noop(items)

    def run() -> None:
        result = wf.run(fresh=True)
        assert result.ok and len(result["work"]) == n, result.error

    return run


def loky_map(n: int, chunksize: int) -> Callable[[], None]:
    def run() -> None:
        import loky

        ex = loky.ProcessPoolExecutor(WORKERS)
        try:
            assert sum(ex.map(noop, range(n), chunksize=chunksize)) == n * (n - 1) // 2
        finally:
            ex.shutdown(wait=True)

    return run


def futures_map(n: int, chunksize: int) -> Callable[[], None]:
    def run() -> None:
        with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
            assert sum(ex.map(noop, range(n), chunksize=chunksize)) == n * (n - 1) // 2

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 2 repeats")
    args = parser.parse_args(argv)
    if compile_sources():
        print("(bytecode caching is off here: FlowForge was byte-compiled first, as an "
              "installed copy is)", file=sys.stderr)
    n = 2_000 if args.quick else 10_000
    repeat = 2 if args.quick else 5
    chunk = -(-n // (WORKERS * 4))
    with tempfile.TemporaryDirectory(prefix="ff-throughput-") as tmp:
        rows: list[tuple[str, Callable[[], None]]] = [
            ("FlowForge process, map (autosave off)", flowforge_map(n, False, tmp)),
            ("FlowForge process, map (autosave on)", flowforge_map(n, True, tmp)),
            ("loky map, chunksize=1", loky_map(n, 1)),
            (f"loky map, chunksize={chunk}", loky_map(n, chunk)),
            ("concurrent.futures map, chunksize=1", futures_map(n, 1)),
            (f"concurrent.futures map, chunksize={chunk}", futures_map(n, chunk)),
        ]
        results = []
        for name, fn in rows:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            results.append((name, statistics.median(times)))
    print(f"\n{n:,} no-op tasks on {WORKERS} process workers, worker start included "
          f"(median of {repeat})\n")
    print(f"| {'method':<44} | {'seconds':>8} | {'tasks/s':>9} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 11}|")
    for name, secs in results:
        print(f"| {name:<44} | {secs:>8.3f} | {n / secs:>9,.0f} |")


if __name__ == "__main__":
    main()
