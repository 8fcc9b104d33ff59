"""Every benchmark, one after another, each printing its table.

``python -m benchmarks`` runs them all (several minutes); ``--quick`` runs each in its
short form; ``--only resultfiles throughput scale`` picks some. Each module also runs alone
(``python -m benchmarks.resultfiles``).
"""

from __future__ import annotations

import argparse
import importlib
import time

ALL = ["overhead", "persistence", "admission", "scale", "resultfiles", "throughput"]
QUICK = {"scale": ["--tasks", "10000"]}  # scale has no --quick: a smaller graph instead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=ALL, default=ALL)
    args = parser.parse_args()
    for name in args.only:
        print(f"\n===== benchmarks.{name} =====", flush=True)
        t0 = time.perf_counter()
        argv = (QUICK.get(name, ["--quick"]) if args.quick else [])
        importlib.import_module(f"benchmarks.{name}").main(argv)
        print(f"(benchmarks.{name} took {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
