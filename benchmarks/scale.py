"""A 100,000-task graph end to end (define, validate, run) with autosave on, and the
driver memory it takes, for the chain and the fan-out shapes.

    python -m benchmarks.scale [--tasks N]

Targets (issue 10): under 5 s end to end and at most 2 KB of driver memory per task on
the sequential executor. Memory is the process's peak resident size (``ru_maxrss``)
above what it was before the graph was built. Each shape runs in a fresh process so one
shape's peak does not hide the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def one(shape: str, n: int) -> dict[str, float]:
    from flowforge import Task, workflow

    def step(**_: object) -> int:
        return 1

    os.chdir(tempfile.mkdtemp(prefix="ff-scale-"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with workflow(f"scale-{shape}", executor="sequential", log_dir=None, quiet=True,
                  progress=False) as wf:
        prev = None
        for i in range(n):
            deps = [prev] if (shape == "chain" and prev) else ([] if i == 0 else ["t0"])
            wf.add_task(Task(f"t{i}", step, depends_on=deps))
            prev = f"t{i}"
    ok = wf.run().ok
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"ok": ok, "seconds": seconds, "bytes_per_task": (peak - before) / n}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--one", choices=["chain", "fan-out"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.tasks)))
        return
    print(f"{'shape':<10} {'tasks':>8} {'end to end':>11} {'driver memory':>15}  targets")
    for shape in ("chain", "fan-out"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--one", shape, "--tasks",
             str(args.tasks)], capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        passed = r["ok"] and r["seconds"] < 5 and r["bytes_per_task"] <= 2048
        print(f"{shape:<10} {args.tasks:>8,} {r['seconds']:>9.2f} s "
              f"{r['bytes_per_task']:>9.0f} B/task  < 5 s, <= 2 KB  "
              f"{'PASS' if passed else 'FAIL'}")
    print("\nsequential executor, autosave on (default durability), log file off; peak RSS "
          "above the start, per task.")


if __name__ == "__main__":
    main()
