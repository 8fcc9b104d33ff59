"""Per-task overhead of FlowForge next to plain Python, dask and process pools.

Run with ``python -m benchmarks.overhead`` (``--quick`` for a tiny run).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks._timing import compile_sources, median_seconds

PROCESS_WORKERS = 2
BUSY_TARGET_S = 0.020


def f(x: int = 0) -> int:
    """The unit of work for the chain/fan-out rows (plain Python and dask)."""
    return 1


def step(**inputs: object) -> int:
    """The one shared task function for FlowForge chain/fan-out rows."""
    return 1


def busy(n: int) -> int:
    """CPU-bound loop; module level so it pickles by reference."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def timed_busy(n: int) -> float:
    """``busy(n)``, returning the CPU seconds it took in the worker that ran it."""
    start = time.thread_time()
    busy(n)
    return time.thread_time() - start


# ---------------------------------------------------------------- chain


def plain_chain(n: int) -> None:
    prev = f()
    for _ in range(n - 1):
        prev = f(prev)


def dask_chain(n: int) -> None:
    import dask

    graph: dict[str, object] = {"t0": (f,)}
    for i in range(1, n):
        graph[f"t{i}"] = (f, f"t{i - 1}")
    dask.get(graph, f"t{n - 1}")


def flowforge_chain(n: int, executor: str) -> None:
    from flowforge import Task, Workflow

    kwargs = {"max_workers": 2} if executor == "thread" else {}
    wf = Workflow("bench", executor=executor, log_dir=None, quiet=True, progress=False,
                  autosave=False, **kwargs)
    wf.add_task(Task("t0", step))
    for i in range(1, n):
        wf.add_task(Task(f"t{i}", step, depends_on=[f"t{i - 1}"]))
    wf.validate()
    result = wf.run()
    if not result.ok:
        raise RuntimeError("FlowForge chain run failed")


# ---------------------------------------------------------------- fan-out


def plain_fanout(n: int) -> None:
    root = f()
    for _ in range(n):
        f(root)


def dask_fanout(n: int) -> None:
    import dask

    graph: dict[str, object] = {"root": (f,)}
    keys = []
    for i in range(n):
        graph[f"t{i}"] = (f, "root")
        keys.append(f"t{i}")
    dask.get(graph, keys)


def flowforge_fanout(n: int, executor: str) -> None:
    from flowforge import Task, Workflow

    kwargs = {"max_workers": 2} if executor == "thread" else {}
    wf = Workflow("bench", executor=executor, log_dir=None, quiet=True, progress=False,
                  autosave=False, **kwargs)
    wf.add_task(Task("root", step))
    for i in range(n):
        wf.add_task(Task(f"t{i}", step, depends_on=["root"]))
    wf.validate()
    result = wf.run()
    if not result.ok:
        raise RuntimeError("FlowForge fan-out run failed")


# ---------------------------------------------------------------- process


def calibrate() -> tuple[int, float]:
    """Iterations for one ~20 ms busy() call, and the measured single-call time."""
    warm_until = time.perf_counter() + 0.3  # let the CPU settle at its working clock
    while time.perf_counter() < warm_until:
        busy(10_000)
    n = 10_000
    while True:
        start = time.perf_counter()
        busy(n)
        elapsed = time.perf_counter() - start
        if elapsed > 0.005:
            break
        n *= 2
    n = max(1, int(n * BUSY_TARGET_S / elapsed))
    single = median_seconds(lambda: busy(n), 9)
    return n, single


def process_flowforge(busy_fn: Callable[[int], float], n_iter: int, count: int) -> list[float]:
    from flowforge import Task, Workflow

    wf = Workflow(
        "bench",
        executor="process",
        max_workers=PROCESS_WORKERS,
        log_dir=None,
        quiet=True,
        progress=False,
        autosave=False,
        params={"n": n_iter},
    )
    for i in range(count):
        wf.add_task(Task(f"p{i}", busy_fn))
    wf.validate()
    result = wf.run()
    if not result.ok:
        raise RuntimeError("FlowForge process run failed")
    return list(result.results.values())


def process_pool(busy_fn: Callable[[int], float], n_iter: int, count: int) -> list[float]:
    with concurrent.futures.ProcessPoolExecutor(PROCESS_WORKERS) as pool:
        return list(pool.map(busy_fn, [n_iter] * count))


def process_loky(busy_fn: Callable[[int], float], n_iter: int, count: int) -> list[float]:
    import loky

    executor = loky.get_reusable_executor(PROCESS_WORKERS)
    work = list(executor.map(busy_fn, [n_iter] * count))
    executor.shutdown(wait=True)  # so the next repeat pays start-up again
    return work


def process_dask_map(busy_fn: Callable[[int], float], n_iter: int, count: int) -> list[float]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=PROCESS_WORKERS, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        return list(client.gather(client.map(busy_fn, [n_iter] * count, pure=False)))


def process_flowforge_dask(
    busy_fn: Callable[[int], float], n_iter: int, count: int
) -> list[float]:
    from flowforge import DaskExecutor, Task, Workflow

    wf = Workflow("bench", log_dir=None, quiet=True, progress=False, autosave=False,
                  params={"n": n_iter})
    for i in range(count):
        wf.add_task(Task(f"p{i}", busy_fn))
    ex = DaskExecutor(n_workers=PROCESS_WORKERS, threads_per_worker=1)
    result = wf.run(executor=ex)
    if not result.ok:
        raise RuntimeError("FlowForge Dask run failed")
    return list(result.results.values())


# ---------------------------------------------------------------- main


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _runner(kind: str, engine: str, n: int, n_iter: int) -> Callable[[], object]:
    """The measured call for one row (``kind``: chain, fan-out or process)."""
    # pickles by reference, as benchmarks.overhead.timed_busy
    from benchmarks.overhead import timed_busy as busy_fn

    table: dict[tuple[str, str], Callable[[], object]] = {
        ("chain", "plain"): lambda: plain_chain(n),
        ("chain", "dask"): lambda: dask_chain(n),
        ("chain", "sequential"): lambda: flowforge_chain(n, "sequential"),
        ("chain", "thread"): lambda: flowforge_chain(n, "thread"),
        ("fan-out", "plain"): lambda: plain_fanout(n),
        ("fan-out", "dask"): lambda: dask_fanout(n),
        ("fan-out", "sequential"): lambda: flowforge_fanout(n, "sequential"),
        ("fan-out", "thread"): lambda: flowforge_fanout(n, "thread"),
        ("process", "ppe"): lambda: process_pool(busy_fn, n_iter, n),
        ("process", "loky"): lambda: process_loky(busy_fn, n_iter, n),
        ("process", "flowforge"): lambda: process_flowforge(busy_fn, n_iter, n),
        ("process", "dask-map"): lambda: process_dask_map(busy_fn, n_iter, n),
        ("process", "flowforge-dask"): lambda: process_flowforge_dask(busy_fn, n_iter, n),
    }
    return table[kind, engine]


def _measure(kind: str, engine: str, n: int, n_iter: int, repeat: int) -> dict[str, float]:
    """One row, in a fresh interpreter, so that what one library leaves behind (imported
    modules, objects the garbage collector walks) never slows the next: ``seconds``, the
    median wall time; for process rows also ``work``, the worker CPU seconds its tasks
    took in that median repeat."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--one", kind, engine, "--tasks",
         str(n), "--n-iter", str(n_iter), "--repeat", str(repeat)],
        capture_output=True, text=True, check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _run_one(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """``seconds``: the median wall time of ``repeat`` calls; ``first``: the first call's
    (the one that starts whatever a process starts once). When ``fn`` returns its tasks'
    worker CPU seconds (the process rows): ``work``, their sum in the middle call (by
    wall time), and ``work_wall``, that call's wall time."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        work = fn()
        runs.append((time.perf_counter() - start, work))
    out = {"seconds": statistics.median(run[0] for run in runs), "first": runs[0][0]}
    wall, work = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    if isinstance(work, list):
        out["work"], out["work_wall"] = math.fsum(work), wall
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--process-tasks", type=int, default=200)
    parser.add_argument("--process-rounds", type=int, default=3,
                        help="rounds in which the process engines take turns")
    parser.add_argument(
        "--quick", action="store_true", help="1000 tasks, 3 repeats, 40 process tasks"
    )
    parser.add_argument("--one", nargs=2, metavar=("KIND", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--n-iter", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        fn = _runner(args.one[0], args.one[1], args.tasks, args.n_iter)
        if args.one[0] != "process":
            fn()  # warm-up (imports, caches)
        print(json.dumps(_run_one(fn, args.repeat)))
        return
    if args.quick:
        args.tasks, args.repeat, args.process_tasks, args.process_rounds = 1000, 3, 40, 1
    compiled = compile_sources()
    n, repeat = args.tasks, args.repeat

    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []

    def add_case(case: str, kind: str, engines: list[tuple[str, str, str]]) -> None:
        baseline = None
        for engine, key, skip in engines:
            if skip:
                rows.append((case, engine, "-", "", "skipped"))
                notes.append(f"{engine}: {skip}")
                continue
            per_task_us = _measure(kind, key, n, 0, repeat)["seconds"] / n * 1e6
            if baseline is None:
                baseline = per_task_us
            ratio = f"{per_task_us / baseline:.1f}x"
            rows.append((case, engine, f"{per_task_us:.2f}", "µs/task", ratio))
            print(f"  done: {case} / {engine}", file=sys.stderr, flush=True)

    dask_skip = "" if _have("dask") else "dask not installed"
    for kind in ("chain", "fan-out"):
        add_case(f"{kind} {n}", kind, [
            ("plain python (baseline)", "plain", ""),
            ("dask.get", "dask", dask_skip),
            ("flowforge sequential", "sequential", ""),
            ("flowforge thread(2)", "thread", ""),
        ])

    count = args.process_tasks
    n_iter, single = calibrate()
    ideal = count * single / PROCESS_WORKERS
    case = f"process {count}x{single * 1e3:.0f}ms"
    no_distributed = "" if _have("distributed") else "dask.distributed not installed"
    proc_engines = [
        ("ProcessPoolExecutor(2)", "ppe", ""),
        ("loky reusable(2)", "loky", "" if _have("loky") else "loky not installed"),
        ("flowforge process(2)", "flowforge", ""),
        ("dask client.map(2 workers)", "dask-map", no_distributed),
        ("flowforge dask(2 workers)", "flowforge-dask", no_distributed),
    ]
    proc_repeat = min(repeat, 3)
    rounds = args.process_rounds
    walls: dict[str, list[float]] = {}
    firsts: dict[str, list[float]] = {}  # each round's first repeat
    by_work: dict[str, list[float]] = {}  # efficiency against the worker CPU each round
    for i in range(rounds):  # engines take turns, so a drift in CPU speed hits them all
        for engine, key, skip in proc_engines:
            if skip or (key in ("dask-map", "flowforge-dask") and i > 0):
                continue  # the Dask rows take long: one round
            got = _measure("process", key, count, n_iter, proc_repeat)
            walls.setdefault(key, []).append(got["seconds"])
            firsts.setdefault(key, []).append(got["first"])
            by_work.setdefault(key, []).append(
                got["work"] / PROCESS_WORKERS / got["work_wall"]
            )
            print(f"  done: {case} / {engine} (round {i + 1})", file=sys.stderr, flush=True)
    ppe = statistics.median(walls["ppe"])
    for engine, key, skip in proc_engines:
        if skip:
            rows.append((case, engine, "-", "", "skipped"))
            notes.append(f"{engine}: {skip}")
            continue
        wall = statistics.median(walls[key])
        spread = "" if len(walls[key]) == 1 else (
            f" ({ideal / max(walls[key]):.2f}-{ideal / min(walls[key]):.2f})"
        )
        rows.append((case, engine, f"{ideal / wall:.2f}{spread}", "efficiency",
                     f"{ppe / wall:.2f}x ppe"))
    ppe_first = statistics.median(firsts["ppe"])
    for engine, key, skip in proc_engines:
        if not skip:
            first = statistics.median(firsts[key])
            rows.append((f"{case}, first run", engine, f"{ideal / first:.2f}", "efficiency",
                         f"{ppe_first / first:.2f}x ppe"))
    for engine, key, skip in proc_engines:
        if not skip:
            rows.append((f"{case} vs worker CPU", engine,
                         f"{statistics.median(by_work[key]):.2f}", "efficiency", ""))

    header = ("case", "engine", "value", "unit", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    aligns = ["<", "<", ">", "<", ">"]

    def fmt(row: tuple[str, ...]) -> str:
        cells = zip(row, aligns, widths, strict=True)
        return "  ".join(f"{c:{a}{w}}" for c, a, w in cells).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    prev_case = rows[0][0]
    for row in rows:
        if row[0] != prev_case:
            print()
            prev_case = row[0]
        print(fmt(row))
    print()
    print(f"µs/task: wall time per task, median of {repeat} repeats (after one warm-up run);"
          " every row runs in a fresh interpreter.")
    print(
        "FlowForge rows are end to end: define tasks, build, validate, run "
        "(log_dir=None, quiet=True, progress=False, autosave=False: the cost of saving "
        "state is in benchmarks.persistence)."
    )
    print("ratio: vs the plain-python row of the same case.")
    print(
        f"efficiency = ({count} x single call {single * 1e3:.1f} ms / {PROCESS_WORKERS} workers)"
        f" / wall time: median over {rounds} round{'s' if rounds > 1 else ''} (range in"
        f" brackets) of the median of {proc_repeat} repeats; the engines take turns each"
        " round (Dask rows: one round)."
        " ratio: ProcessPoolExecutor's wall time / this row's."
    )
    print(
        "Every process wall time includes pool start-up "
        "(the loky executor is shut down between repeats)."
    )
    print(
        "first run: the first repeat of each round (median over the rounds), the first run"
        " of a fresh interpreter: it also starts what a process starts once and keeps"
        " (loky's resource trackers; FlowForge's fork server, which later runs fork their"
        " workers from)."
    )
    print(
        "vs worker CPU: the same runs, with the ideal time taken from the CPU seconds the"
        " tasks used in their workers in that very run (summed / workers), so the single"
        " call measured alone does not count against the engines when two busy workers"
        " run slower than one (shared cores, a noisy host); what is left is the engine's"
        " own cost: start-up, hand-overs, shutdown, and the CPU the driver takes from the"
        " workers. Median over the rounds."
    )
    print(f"python {sys.version.split()[0]}")
    if compiled:
        print("bytecode caching is off here (PYTHONDONTWRITEBYTECODE): FlowForge and these"
              " benchmarks were byte-compiled first, as an installed copy is")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
