"""Interleaved A/B of the 200-task process row between two checkouts of FlowForge.

Each round runs ``benchmarks.overhead --one process {ppe,flowforge}`` from each checkout
in turn (the order alternating), so both see the same host; it prints each round's
ratio to ``ProcessPoolExecutor`` and the median and range per checkout::

    python -m benchmarks.ab BEFORE_DIR AFTER_DIR --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def _one(folder: str, engine: str, n_iter: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--one", "process", engine,
         "--tasks", "200", "--n-iter", n_iter, "--repeat", "3"],
        cwd=folder, env={**os.environ, "PYTHONPATH": folder}, capture_output=True,
        text=True, check=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--n-iter", default="470000", help="busy-loop size: ~20 ms a task")
    args = parser.parse_args(argv)
    ratios: dict[str, list[float]] = {args.a: [], args.b: []}
    for r in range(args.rounds):
        order = [args.a, args.b] if r % 2 == 0 else [args.b, args.a]
        for folder in order:
            ratio = _one(folder, "ppe", args.n_iter) / _one(folder, "flowforge", args.n_iter)
            ratios[folder].append(ratio)
            print(f"round {r}: {folder}: {ratio:.3f} x ProcessPoolExecutor", flush=True)
    for folder, got in ratios.items():
        print(f"{folder}: median {statistics.median(got):.3f} "
              f"(range {min(got):.3f}-{max(got):.3f}, {len(got)} rounds)")


if __name__ == "__main__":
    main()
