"""Per-task cost of admission control: the same 10,000-task runs with and without
resource requests, in one process, medians of repeats.

    python -m benchmarks.admission [--quick]

Target (issue 5): declaring resources costs at most 2x the per-task time of the same run
without them. Autosave and the log file are off so that only admission differs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from flowforge import ResourceLimits, Resources, Task, Workflow


def _noop(**_: object) -> int:
    return 1


def build(n: int, shape: str, declared: bool) -> Workflow:
    options: dict[str, object] = {}
    if declared:
        options = {"limits": ResourceLimits(cpus=4, memory="8GiB", max_concurrent_tasks=8),
                   "concurrency": {"pool": 4}}
    wf = Workflow("bench", executor="sequential", log_dir=None, quiet=True, progress=False,
                  autosave=False, **options)  # type: ignore[arg-type]
    prev: str | None = None
    for i in range(n):
        deps = [prev] if (shape == "chain" and prev) else ([] if i == 0 else ["t0"])
        extra: dict[str, object] = {}
        if declared:
            extra = {"resources": Resources(cpus=1, memory="64MiB"), "tags": ["pool"]}
        wf.add_task(Task(f"t{i}", _noop, depends_on=deps, **extra))  # type: ignore[arg-type]
        prev = f"t{i}"
    return wf


def measure(n: int, shape: str, declared: bool, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        wf = build(n, shape, declared)
        t0 = time.perf_counter()
        assert wf.run().ok
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 3 repeats")
    args = parser.parse_args(argv)
    n, repeat = (2_000, 3) if args.quick else (10_000, 5)
    print(f"{'case':<22} {'no requests':>12} {'with requests':>14} {'ratio':>6}  target")
    for shape in ("chain", "fan-out"):
        base = measure(n, shape, False, repeat)
        with_req = measure(n, shape, True, repeat)
        ratio = with_req / base
        verdict = "PASS" if ratio <= 2 else "FAIL"
        print(f"{shape + f' {n:,}':<22} {base:>9.2f} µs {with_req:>11.2f} µs {ratio:>6.2f}  "
              f"<= 2.00 {verdict}")
    print(f"\nwf.run() wall time per task, median of {repeat}; sequential executor, "
          "autosave and log file off. Requests: Resources(cpus=1, memory='64MiB'), tag "
          "'pool' (concurrency 4), limits cpus=4, memory=8GiB, max_concurrent_tasks=8.")


if __name__ == "__main__":
    main()
