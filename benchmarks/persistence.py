"""What persistence costs: autosave per task, its scaling, resuming, and start-up to resume.

Run with ``python -m benchmarks.persistence`` (``--quick`` for a short run, ``--profile``
to also print where a resume of 100,000 tasks spends its time). Four checks:

1. per-task overhead of autosave on a chain (sequential executor): off (the baseline),
   on with each store and durability;
2. the added cost per task at 1,000 and 100,000 tasks: it should not grow with the run;
3. resuming a run of 100,000 saved tasks, in a fresh process: ``wf.run()`` seconds;
4. from ``Popen`` to the first task of a resumed run of a 100-task chain killed (SIGKILL)
   at task 50, next to ``python -c pass`` and a fresh run of the same script.

Everything runs in temporary folders; nothing is written in the repository.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks._timing import compile_sources

if TYPE_CHECKING:
    from flowforge import Workflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(REPO, "benchmarks", "_resume_probe.py")

TARGET_ADDED_US = 30.0  # check 1: default autosave adds at most this per task
TARGET_SCALING = 0.20  # check 2: added cost per task at 1k and 100k within 20%
TARGET_RESUME_S = 2.0  # check 3: resuming 100,000 saved tasks
TARGET_FIRST_TASK_S = 0.3  # check 4: process start to the first resumed task


# ---------------------------------------------------------------- task functions


def step(**inputs: object) -> int:
    """Every task but the last one of the resume chain (same as benchmarks.overhead)."""
    return 1


def last_step(**inputs: object) -> int:
    """The last task of the resume chain: fails until the marker file exists."""
    if not os.path.exists(os.environ["FF_BENCH_MARKER"]):
        raise RuntimeError("marker absent: failing on purpose")
    return 1


def build_chain(n: int, name: str, last: Callable[..., int] = step, **options: Any) -> Workflow:
    """A chain t0 <- t1 <- ... built with the classic API, as in benchmarks.overhead."""
    from flowforge import Task
    from flowforge import Workflow as _Workflow

    wf = _Workflow(name, executor="sequential", log_dir=None, quiet=True, progress=False, **options)
    wf.add_task(Task("t0", step))
    for i in range(1, n - 1):
        wf.add_task(Task(f"t{i}", step, depends_on=[f"t{i - 1}"]))
    wf.add_task(Task(f"t{n - 1}", last, depends_on=[f"t{n - 2}"]))
    return wf


# ---------------------------------------------------------------- checks 1 and 2


@dataclass(frozen=True)
class Config:
    label: str
    n: int
    options: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.label, self.n)


@dataclass(frozen=True)
class Group:
    """A baseline config (autosave off) and the configs compared with it, at one size."""

    n: int
    configs: list[Config]
    samples_per_repeat: int = 1


@dataclass(frozen=True)
class Measured:
    us: float  # median µs/task
    added: float  # median of (this - baseline measured just before), µs/task


_counter = [0]


def time_chain_run(cfg: Config, state_dir: str) -> float:
    """Seconds for ``wf.run()`` of a new chain (building it is not timed).

    Each run uses a new workflow name in a state folder that already has its key (made by
    the warm-up run), so it pays the per-run costs (lock, run summary) but not the
    one-off key creation of a brand-new state folder."""
    _counter[0] += 1
    wf = build_chain(cfg.n, f"bench{_counter[0]}", state_dir=state_dir, **cfg.options)
    wf.validate()
    gc.collect()
    start = time.perf_counter()
    result = wf.run()
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"{cfg.label}: chain run failed: {result.status}")
    return elapsed


def measure_chains(groups: list[Group], repeat: int, root: str) -> dict[tuple[str, int], Measured]:
    """Per config: median µs/task and median added µs/task, where each added sample is the
    difference to the baseline run just before it. Groups are interleaved within each
    repeat so that drift on a noisy machine hits them all alike."""
    dirs: dict[tuple[str, int], str] = {}
    for group in groups:
        for cfg in group.configs:
            dirs[cfg.key] = os.path.join(root, f"chain-{cfg.label}-{cfg.n}")
            time_chain_run(Config(cfg.label, 200, cfg.options), dirs[cfg.key])  # warm-up
    per_task: dict[tuple[str, int], list[float]] = {}
    added: dict[tuple[str, int], list[float]] = {}
    for r in range(repeat):
        for group in groups:
            for _ in range(group.samples_per_repeat):
                base = None
                for cfg in group.configs:
                    us = time_chain_run(cfg, dirs[cfg.key]) / cfg.n * 1e6
                    per_task.setdefault(cfg.key, []).append(us)
                    base = us if base is None else base
                    added.setdefault(cfg.key, []).append(us - base)
        _progress(f"chains: repeat {r + 1}/{repeat}")
    return {
        k: Measured(statistics.median(v), statistics.median(added[k])) for k, v in per_task.items()
    }


# ---------------------------------------------------------------- check 3


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


_PHASES = [
    ("flowforge.workflow", "Workflow._bind", "bind params (engine, not persistence)"),
    ("flowforge._run", "fingerprints", "fingerprint every task"),
    ("flowforge.persistence.manager", "PersistenceManager.begin", "begin: lock, find, plan"),
    ("flowforge.persistence.manager", "_read_journal", "  read + verify the journal"),
    ("flowforge.persistence.store", "StateStore.sealer", "    load the key"),
    ("flowforge.persistence.files", "FileStore.read_journal", "    read file, crc+HMAC scan"),
    ("flowforge.persistence.manager", "record_from", "    TaskRecord per frame"),
    ("flowforge.persistence.manager", "make_plan", "  make_plan"),
    ("flowforge.persistence.manager", "RunSession.__init__", "  RunSession()"),
    ("flowforge._engine", "Engine.__init__", "Engine() (incl. restore)"),
    ("flowforge._engine.recorder", "Recorder.restore", "  Recorder.restore"),
    ("flowforge._engine", "Engine.run", "Engine.run (1 task + end)"),
    ("flowforge.metrics", "RunMetrics.from_tasks", "  RunMetrics.from_tasks"),
]


def _install_phase_timers() -> dict[str, float]:
    """Wrap the functions of _PHASES with wall-clock timers (inclusive, summed)."""
    import importlib

    totals: dict[str, float] = {}

    def wrap(fn: Callable[..., object], label: str) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

        return timed

    for module_name, qualname, label in _PHASES:
        module = importlib.import_module(module_name)
        owner: object = module
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, attr, None)
        if fn is None:
            continue  # the code moved on: skip that phase
        raw = vars(owner).get(attr) if isinstance(owner, type) else fn
        if isinstance(raw, classmethod):
            setattr(owner, attr, classmethod(wrap(raw.__func__, label)))
        else:
            setattr(owner, attr, wrap(fn, label))
        totals.setdefault(label, 0.0)
    return totals


def child_main(argv: list[str]) -> None:
    """``--child fail|resume|profile STATE_DIR N``: one run of the resume chain; prints
    JSON (build and run seconds, status, restored and executed counts). ``profile`` also
    prints to stderr where run() spends its time: wall time per phase and in the garbage
    collector (one run), then cProfile's top functions (a second run on a copy)."""
    mode, state_dir, n = argv[0], argv[1], int(argv[2])
    phases = _install_phase_timers() if mode == "profile" else None
    gc_time = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    if mode == "profile":
        shutil.copytree(state_dir, state_dir + ".cprofile")
        gc.callbacks.append(on_gc)
    t = time.perf_counter()
    wf = build_chain(n, "resume-bench", last=last_step, state_dir=state_dir)
    build_s = time.perf_counter() - t
    gc_time[0] = 0.0
    t = time.perf_counter()
    result = wf.run()
    run_s = time.perf_counter() - t
    if phases is not None:
        gc.callbacks.remove(on_gc)
        lines = [f"resume run() {run_s:.3f} s, of which (inclusive wall times):"]
        lines += [f"  {label:<40} {secs:7.3f} s" for label, secs in phases.items()]
        lines.append(f"  {'garbage collector (all of run())':<40} {gc_time[0]:7.3f} s")
        print("\n".join(lines), file=sys.stderr)
        import cProfile
        import io
        import pstats

        again = build_chain(n, "resume-bench", last=last_step, state_dir=state_dir + ".cprofile")
        profiler = cProfile.Profile()
        profiler.enable()
        again.run()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print("cProfile of a second resume (inflates small calls):", file=sys.stderr)
        print(out.getvalue().strip(), file=sys.stderr)
    restored = sum(1 for r in result.tasks.values() if r.restored)
    executed = sum(1 for r in result.tasks.values() if r.attempts and not r.restored)
    print(
        json.dumps(
            {
                "build_s": build_s,
                "run_s": run_s,
                "status": result.status.value,
                "resumed": result.resumed,
                "restored": restored,
                "executed": executed,
            }
        )
    )


def run_child(mode: str, state_dir: str, n: int, cwd: str, marker: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.persistence", "--child", mode, state_dir, str(n)],
        cwd=cwd,
        env=_child_env(FF_BENCH_MARKER=marker),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr}")
    if mode == "profile":
        print(proc.stderr, file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_resume(n: int, repeat: int, root: str, profile: bool) -> dict[str, float]:
    """Fail the last task of an n-task chain once (in a child process), snapshot the state
    folder, then per repeat: copy the snapshot, create the marker, and resume in a fresh
    child process."""
    base = os.path.join(root, "resume")
    os.makedirs(base)
    snapshot = os.path.join(base, "snapshot")
    marker = os.path.join(base, "marker")
    first = run_child("fail", snapshot, n, base, marker)
    if first["status"] != "failed" or first["executed"] != n:
        raise RuntimeError(f"the failing run did not fail as planned: {first}")
    _progress(f"resume: failing run of {n} tasks done ({first['run_s']:.1f}s)")
    open(marker, "w").close()
    builds, runs = [], []
    for r in range(repeat):
        work = os.path.join(base, f"work{r}")
        shutil.copytree(snapshot, work)
        got = run_child("resume", work, n, base, marker)
        if (got["status"], got["resumed"], got["restored"], got["executed"]) != (
            "succeeded",
            True,
            n - 1,
            1,
        ):
            raise RuntimeError(f"the resume did not go as planned: {got}")
        builds.append(float(got["build_s"]))
        runs.append(float(got["run_s"]))
        shutil.rmtree(work)
        _progress(f"resume: repeat {r + 1}/{repeat}: run() {got['run_s']:.2f}s")
    if profile:
        work = os.path.join(base, "profiled")
        shutil.copytree(snapshot, work)
        run_child("profile", work, n, base, marker)
    journal = sum(
        os.path.getsize(os.path.join(dp, f))
        for dp, _, fs in os.walk(snapshot)
        for f in fs
        if f.endswith(".journal")
    )
    return {
        "build_s": statistics.median(builds),
        "run_s": statistics.median(runs),
        "fail_run_s": float(first["run_s"]),
        "journal_mb": journal / 1e6,
    }


# ---------------------------------------------------------------- check 4


def _spawn(args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, int]:
    """(time.time() just before Popen, exit code)."""
    t0 = time.time()
    proc = subprocess.Popen(args, cwd=cwd, env=env)
    return t0, proc.wait()


def import_profile(root: str, top: int = 12) -> str:
    """``-X importtime`` of the resumed probe run: its costliest top-level imports."""
    cwd = os.path.join(root, "first-task", "importtime")
    os.makedirs(cwd)
    env = _child_env(
        FF_BENCH_STAMP=os.path.join(cwd, "stamp.json"), FF_BENCH_MARKER=os.path.join(cwd, "marker")
    )
    subprocess.run([sys.executable, PROBE, "kill"], cwd=cwd, env=env, check=False)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", PROBE, "resume"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line.split("|")
        name = name[1:]
        if name.startswith(" ") or name in ("site", "encodings"):
            continue  # nested (counted in its parent's cumulative time), or start-up
        found.append((int(cum_us), name.strip()))
    found.sort(reverse=True)
    lines = [
        "-X importtime of the resumed probe run (top-level imports, cumulative; "
        "importtime itself inflates them):"
    ]
    lines += [f"  {us / 1e3:7.1f} ms  {name}" for us, name in found[:top]]
    return "\n".join(lines)


def measure_first_task(repeat: int, root: str) -> dict[str, dict[str, float]]:
    """Seconds from just before Popen to the first executed task, per mode (medians),
    plus the probe's own stamps (script start, imports done, built, run() called)."""
    base = os.path.join(root, "first-task")
    os.makedirs(base)
    py = sys.executable
    samples: dict[str, list[dict[str, float]]] = {}

    def add(mode: str, t0: float, stamp_file: str) -> None:
        with open(stamp_file) as f:
            stamps = json.load(f)
        os.unlink(stamp_file)
        samples.setdefault(mode, []).append({k: v - t0 for k, v in stamps.items()})

    for r in range(repeat):
        cwd = os.path.join(base, f"r{r}")
        os.makedirs(cwd)
        stamp = os.path.join(cwd, "stamp.json")
        env = _child_env(FF_BENCH_STAMP=stamp, FF_BENCH_MARKER=os.path.join(cwd, "marker"))

        t0, rc = _spawn([py, "-c", "pass"], cwd, env)
        samples.setdefault("python -c pass", []).append({"first_task": time.time() - t0})

        t0, rc = _spawn([py, PROBE, "kill"], cwd, env)
        if rc != -9:
            raise RuntimeError(f"the probe's first run should die of SIGKILL, got exit {rc}")
        os.unlink(stamp)  # t0 of the killed run wrote it

        t0, rc = _spawn([py, PROBE, "resume"], cwd, env)
        if rc != 0:
            raise RuntimeError(f"the resumed probe run failed (exit {rc})")
        add("resume", t0, stamp)

        t0, rc = _spawn([py, PROBE, "fresh"], cwd, env)
        if rc != 0:
            raise RuntimeError(f"the fresh probe run failed (exit {rc})")
        add("fresh", t0, stamp)

        t0, rc = _spawn([py, PROBE, "fresh-nosave"], cwd, env)
        if rc != 0:
            raise RuntimeError(f"the autosave=False probe run failed (exit {rc})")
        add("fresh-nosave", t0, stamp)
        _progress(f"first task: repeat {r + 1}/{repeat}")
    return {
        mode: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        for mode, runs in samples.items()
    }


# ---------------------------------------------------------------- main


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000, help="chain size for check 1")
    parser.add_argument("--fsync-tasks", type=int, default=1_000)
    parser.add_argument("--big", type=int, default=100_000, help="large chain for check 2")
    parser.add_argument("--resume-tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 repeats, and 20,000 tasks instead of 100,000 for the scaling check",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="where a 100,000-task resume spends its time (stderr), and the probe's imports",
    )
    parser.add_argument("--dir", default=None, help="where the temporary folders go")
    args = parser.parse_args(argv)
    if compile_sources():
        print("(bytecode caching is off here: FlowForge was byte-compiled first, as an "
              "installed copy is)", file=sys.stderr)
    if args.quick:
        args.repeat, args.big = 3, 20_000
    repeat = args.repeat
    small = 1_000

    from flowforge.persistence import _frames  # noqa: F401  (import before timing)

    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="ff-persist-bench-", dir=args.dir)
    here = os.getcwd()
    os.chdir(root)  # whatever writes to the cwd writes here, not in the repository
    try:
        off: dict[str, Any] = {"autosave": False}
        files: dict[str, Any] = {}
        fsync: dict[str, Any] = {"durability": "fsync"}
        sqlite: dict[str, Any] = {"state_store": "sqlite"}
        sqlite_fsync: dict[str, Any] = {"state_store": "sqlite", "durability": "fsync"}
        n, nf, big = args.tasks, args.fsync_tasks, args.big
        groups = [
            Group(
                n, [Config("off", n, off), Config("files", n, files), Config("sqlite", n, sqlite)]
            ),
            Group(
                nf,
                [
                    Config("off", nf, off),
                    Config("files-fsync", nf, fsync),
                    Config("sqlite-fsync", nf, sqlite_fsync),
                ],
            ),
            Group(
                small,
                [Config("off", small, off), Config("files", small, files)],
                samples_per_repeat=5,
            ),
            Group(big, [Config("off", big, off), Config("files", big, files)]),
        ]
        us = measure_chains(groups, repeat, root)
        resume = measure_resume(args.resume_tasks, repeat, root, args.profile)
        first = measure_first_task(repeat, root)
        imports = import_profile(root) if args.profile else ""
    finally:
        os.chdir(here)
        shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - started

    rows: list[tuple[str, ...]] = []

    def chain_row(
        check: str, case: str, label: str, size: int, target: str = "", limit: float | None = None
    ) -> float:
        m = us[(label, size)]
        if label == "off":
            rows.append((check, case, f"{m.us:.2f}", "µs/task", "baseline", target, ""))
            return 0.0
        mark = "" if limit is None else _mark(m.added <= limit)
        rows.append((check, case, f"{m.us:.2f}", "µs/task", f"{m.added:+.2f}", target, mark))
        return m.added

    c1 = f"1 autosave, chain {n:,}"
    chain_row(c1, "autosave off", "off", n)
    chain_row(
        c1,
        "files, durability=process (default)",
        "files",
        n,
        f"<= +{TARGET_ADDED_US:.0f} µs",
        TARGET_ADDED_US,
    )
    chain_row(c1, "sqlite, durability=process", "sqlite", n)
    c1f = f"1 autosave, chain {nf:,}"
    chain_row(c1f, "autosave off", "off", nf)
    chain_row(c1f, "files, durability=fsync", "files-fsync", nf)
    chain_row(c1f, "sqlite, durability=fsync", "sqlite-fsync", nf)

    c2 = "2 scaling (files)"
    chain_row(c2, f"autosave off, {small:,} tasks", "off", small)
    a_small = chain_row(c2, f"autosave on, {small:,} tasks", "files", small)
    chain_row(c2, f"autosave off, {big:,} tasks", "off", big)
    a_big = chain_row(c2, f"autosave on, {big:,} tasks", "files", big)
    ratio = a_big / a_small if a_small > 0 else float("inf")
    rows.append(
        (
            c2,
            f"added/task {big:,} vs {small:,}",
            f"{ratio:.2f}",
            "x",
            "",
            f"1 ± {TARGET_SCALING:.2f}",
            _mark(abs(ratio - 1) <= TARGET_SCALING),
        )
    )

    r = args.resume_tasks
    c3 = f"3 resume {r:,} (new process)"
    rows.append(
        (c3, "build the workflow (not counted)", f"{resume['build_s']:.2f}", "s", "", "", "")
    )
    rows.append(
        (
            c3,
            f"wf.run(): {r - 1:,} restored, 1 run",
            f"{resume['run_s']:.2f}",
            "s",
            "",
            f"< {TARGET_RESUME_S:.0f} s",
            _mark(resume["run_s"] < TARGET_RESUME_S),
        )
    )
    rows.append(
        (c3, "for scale: the failing first run", f"{resume['fail_run_s']:.2f}", "s", "", "", "")
    )

    c4 = "4 Popen -> first task"
    base = first["python -c pass"]["first_task"]
    rows.append((c4, "python -c pass (exit)", f"{base:.3f}", "s", "", "", ""))
    nosave = first["fresh-nosave"]["first_task"]
    rows.append((c4, "fresh run, autosave=False", f"{nosave:.3f}", "s", "baseline", "", ""))
    fresh = first["fresh"]["first_task"]
    rows.append(
        (c4, "fresh run, autosave on", f"{fresh:.3f}", "s", f"{fresh - nosave:+.3f}", "", "")
    )
    res = first["resume"]["first_task"]
    rows.append(
        (
            c4,
            "resumed run (SIGKILLed at t50)",
            f"{res:.3f}",
            "s",
            f"{res - nosave:+.3f}",
            f"<= {TARGET_FIRST_TASK_S} s",
            _mark(res <= TARGET_FIRST_TASK_S),
        )
    )

    header = ("check", "case", "value", "unit", "added", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    aligns = ["<", "<", ">", "<", ">", "<", "<"]

    def fmt(row: tuple[str, ...]) -> str:
        cells = zip(row, aligns, widths, strict=True)
        return "  ".join(f"{c:{a}{w}}" for c, a, w in cells).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    prev = rows[0][0]
    for row in rows:
        if row[0] != prev:
            print()
            prev = row[0]
        print(fmt(row))
    print()
    print(
        f"Checks 1-2: wf.run() wall time per task (building the workflow not timed), "
        f"median of {repeat} repeats ({5 * repeat} for check 2's {small:,}-task rows), "
        "sizes interleaved; sequential executor, log_dir=None, quiet=True, progress=False. "
        "added = median of (this run - the autosave-off run of the same size just before)."
    )
    print(
        f"fsync rows use {nf:,} tasks (an fdatasync per task). Each timed run is a new "
        "workflow in a state folder whose key already exists (made by a warm-up run)."
    )
    print(
        f"Check 3: the chain's last task fails the first time; {repeat} resumes, each in a "
        "new process on a copy of the saved state (the OS file cache is warm). Journal: "
        f"{resume['journal_mb']:.1f} MB. Sequential executor, log_dir=None."
    )
    print(
        f"Check 4: medians of {repeat}; the probe (benchmarks/_resume_probe.py) runs with a "
        "user's defaults (thread executor, log_dir='logs', state_dir='state' in a temporary "
        "cwd, quiet=True). Reference (issue): Luigi 0.13 s, DBOS 1.5 s, Prefect 6.8 s."
    )
    for mode in ("fresh-nosave", "fresh", "resume"):
        s = first[mode]
        print(
            f"  {mode:<12}: script starts {s['script']:.3f} s, imports done "
            f"{s['imported']:.3f}, built {s['built']:.3f}, run() called "
            f"{s['run_called']:.3f}, first task {s['first_task']:.3f} "
            f"(run() to first task {s['first_task'] - s['run_called']:.3f})"
        )
    if imports:
        print(imports)
    print(
        f"python {sys.version.split()[0]}, temporary folders under "
        f"{args.dir or tempfile.gettempdir()}; total {total_s:.0f} s"
    )


if __name__ == "__main__":
    main()
