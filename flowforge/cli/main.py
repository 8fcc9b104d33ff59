"""Argument parsing and the commands of ``flowforge``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import FlowForgeError
from .arguments import byte_size, params_of, positive, seconds, whole_number
from .output import (
    CANCELLED,
    FAILED,
    OK,
    USAGE,
    manager_of,
    output,
    print_json,
    run_json,
    run_row,
    run_rows,
    table,
    text_row,
)

__all__ = ["main"]



_DESCRIPTION = """\
FlowForge: define, run, resume, schedule and watch multi-step workflows.

Run a workflow file (Python or YAML/JSON), resume or cancel a run, see what ran
(history, status, plan), validate and export definitions, schedule jobs, and start
the dashboard (ui). Exit codes: 0 ok, 1 a run failed, 2 bad usage, 130 cancelled."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return USAGE
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `flowforge status RUN | head`: the reader had enough
        _quiet_closed_stdout()
        return OK
    except (FlowForgeError, KeyError, ValueError, OSError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"flowforge {args.command}: {text}", file=sys.stderr)
        return USAGE


def _quiet_closed_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not print
    ``[Errno 32] Broken pipe`` (as ``git`` and ``ls`` end quietly)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="flowforge", description=_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"flowforge {__version__}")
    p.add_argument("--state-dir", default="state", help="the state folder (default: state)")
    common = argparse.ArgumentParser(add_help=False)  # --state-dir after the command too
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command")
    original = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return original(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    run = sub.add_parser("run", help="run a workflow from a Python file or module")
    _target(run)
    given = run.add_mutually_exclusive_group()
    given.add_argument("--params", help="params as a JSON object")
    given.add_argument("--params-file", metavar="PATH",
                       help="params as a JSON object in a file, or - for standard input "
                            "(for params too large for the command line)")
    run.add_argument("-p", dest="param", action="append", default=[], metavar="KEY=VALUE",
                     help="one param, converted to the type its task parameter "
                     "expects (its hint or default); else JSON if it parses, else text")
    run.add_argument("--executor", choices=["sequential", "thread", "process", "dask"],
                     help="run every task here (dask: a LocalCluster of this machine)")
    run.add_argument("--fresh", action="store_true", help="do not resume an unfinished run")
    run.add_argument("--json", action="store_true",
                     help="print the run's status, counts and results as JSON")
    run.add_argument("--allow-module", action="append", default=[], metavar="PREFIX",
                     help="a YAML/JSON definition may call only modules under PREFIX "
                          "(repeatable; also FLOWFORGE_ALLOWED_MODULES=a,b)")
    run.set_defaults(func=_run)

    plan = sub.add_parser("plan", help="what a run would restore and run, and why")
    _target(plan)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_plan)

    val = sub.add_parser("validate", help="load and check a workflow without running it")
    _target(val)
    val.add_argument("--json", action="store_true",
                     help="print {valid, workflow, tasks} or {valid: false, problems}")
    val.set_defaults(func=_validate)

    lst = sub.add_parser("list", help="workflows in the state folder, with their last run")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)

    hist = sub.add_parser("history", help="saved runs, newest first")
    hist.add_argument("--workflow")
    hist.add_argument("--status")
    hist.add_argument("--limit", type=positive, default=20)
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=_history)

    st = sub.add_parser("status", help="one saved run")
    st.add_argument("run_id")
    st.add_argument("--tasks", action="store_true", help="each task's state and timing")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)

    res = sub.add_parser("resume", help="resume an unfinished run (the last of its workflow)")
    res.add_argument("run_id")
    res.add_argument("target", nargs="?", help="the workflow's file, if the run did not save it")
    res.set_defaults(func=_resume)

    can = sub.add_parser("cancel", help="stop a running run (from another terminal)")
    can.add_argument("run_id")
    can.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                     help="wait until the run reports cancelled (default: wait)")
    can.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS",
                     help="how long --wait waits (default: 30)")
    can.add_argument("--force", action="store_true",
                     help="also end the child processes its running tasks started")
    can.set_defaults(func=_cancel)

    clean = sub.add_parser("clean", help="delete old runs, keeping the newest per workflow")
    clean.add_argument("--keep", type=whole_number(0), default=10,
                       help="how many of each workflow's newest runs to keep (default 10)")
    clean.set_defaults(func=_clean)

    graph = sub.add_parser("graph", help="the DAG as text, or a picture through Graphviz")
    _target(graph)
    graph.add_argument("-o", dest="output", help="dag.svg or dag.png (needs Graphviz's dot)")
    graph.add_argument("--json", action="store_true",
                       help="print each task with its upstream tasks, in run order")
    graph.set_defaults(func=_graph)

    export = sub.add_parser("export", help="the workflow as json, mermaid or dot")
    _target(export)
    export.add_argument("--format", choices=["yaml", "json", "mermaid", "dot"],
                        default="yaml")
    export.add_argument("-o", dest="output", help="write to this file")
    export.set_defaults(func=_export)

    sched = sub.add_parser("schedule", help="run a workflow on a cron schedule (foreground)")
    _target(sched)
    sched.add_argument("--cron", help='e.g. "*/15 * * * *" or @daily (default: the '
                       "definition's schedule:)")
    sched.add_argument("--timezone")
    sched.add_argument("--name", help="the job's name (default: the workflow's)")
    sched.set_defaults(func=_schedule)

    workers = sub.add_parser("workers", help="the workers of a Dask cluster")
    workers.add_argument("--address", required=True, help="tcp://scheduler:8786")
    workers.add_argument("--json", action="store_true")
    workers.set_defaults(func=_workers)

    schema = sub.add_parser("schema", help="print the JSON Schema of YAML/JSON definitions")
    schema.set_defaults(func=_schema)

    jobs = sub.add_parser("jobs", help="scheduled jobs known in the state folder")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=_jobs)

    ui = sub.add_parser("ui", help="serve the web dashboard and HTTP API (flowforge[web])")
    ui.add_argument("targets", nargs="*", metavar="TARGET",
                    help="files or modules of workflows the dashboard may start")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1; any other needs a token)")
    ui.add_argument("--port", type=int, default=8765)
    ui.add_argument("--token", default=None,
                    help="required on every request (default: $FLOWFORGE_UI_TOKEN)")
    ui.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[],
                    metavar="HOST[:PORT]",
                    help="a further name the dashboard may be reached at (repeatable; "
                         "loopback names and --host always are)")
    ui.add_argument("--max-body", type=byte_size, default=1 << 20, metavar="SIZE",
                    help="the largest request body, in bytes or like 2MiB (default 1MiB)")
    ui.add_argument("--log-file", default=os.path.join("logs", "workflow.log"),
                    help="the runs' JSON log, for tracebacks and log lines "
                         "(default: logs/workflow.log)")
    ui.set_defaults(func=_ui)
    return p


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a Python file (path/to/flow.py) or module (pkg.flow)")
    p.add_argument("--workflow", help="which workflow, when the target defines several")


def _workflow(args: argparse.Namespace) -> Any:
    from ..loading import load, pick

    wf = pick(load(args.target), args.workflow, args.target)
    wf.state_dir = args.state_dir
    return wf


# -- commands -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    params = params_of(args)  # first: a parent writing them to our stdin is not kept waiting
    if args.allow_module:  # before the definition loads: its imports are checked
        from ..definitions.tasktypes import ALLOWED_MODULES_ENV, allowed_modules

        outer = allowed_modules()  # set by whoever started us: flags may only narrow it
        for prefix in args.allow_module:
            if outer is not None and not any(
                prefix == o or prefix.startswith(o + ".") for o in outer
            ):
                raise ValueError(f"--allow-module {prefix} is outside "
                                 f"{ALLOWED_MODULES_ENV}={','.join(outer)}")
        os.environ[ALLOWED_MODULES_ENV] = ",".join(args.allow_module)
    wf = _workflow(args)
    from .._params import from_text

    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"-p takes KEY=VALUE, got {item!r}")
        params[key] = from_text(wf, key, value)
    result = wf.run(params, executor=args.executor, fresh=args.fresh)
    if args.json:
        print_json(run_json(result))
    if result.ok:
        return OK
    if result.status == "cancelled":
        print(f"run {result.run_id} cancelled; `flowforge resume {result.run_id}` goes on "
              "from where it stopped", file=sys.stderr)
        return CANCELLED
    failed = [n for n, t in result.tasks.items() if t.state == "failed" and not t.tolerated]
    if failed:
        print(f"failed tasks: {', '.join(failed)}", file=sys.stderr)
    if wf.log_dir is not None:
        print(f"log: {os.path.join(os.fspath(wf.log_dir), 'workflow.log')}", file=sys.stderr)
    return FAILED


def _plan(args: argparse.Namespace) -> int:
    plan = _workflow(args).plan()
    if args.json:
        print_json({"workflow": plan.workflow, "resume": plan.run_id, "notes": plan.notes,
                     "tasks": [e._asdict() for e in plan.entries.values()]})
    else:
        print(plan)
    return OK


def _validate(args: argparse.Namespace) -> int:
    try:
        wf = _workflow(args)
        wf.validate()
    except FlowForgeError as exc:
        if not args.json:
            raise
        problems = getattr(exc, "problems", None) or [str(exc)]
        print_json({"valid": False, "file": args.target, "problems": list(problems)})
        return USAGE
    if args.json:
        print_json({"valid": True, "file": args.target, "workflow": wf.name,
                    "tasks": len(wf.tasks)})
        return OK
    print(f"{args.target}: workflow {wf.name!r} is valid ({len(wf.tasks)} tasks)")
    return OK


def _list(args: argparse.Namespace) -> int:
    latest: dict[str, Any] = {}
    for row in run_rows(args, None):
        latest.setdefault(row["workflow"], row)
    output(args, list(latest.values()), ["workflow", "run_id", "status", "started", "tasks"],
            text_row)
    return OK


def _history(args: argparse.Namespace) -> int:
    rows = run_rows(args, args.workflow)
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    output(args, rows[: args.limit],
            ["workflow", "run_id", "status", "started", "duration", "tasks"], text_row)
    return OK


def _status(args: argparse.Namespace) -> int:
    try:
        saved = manager_of(args).load(args.run_id)
    except KeyError:
        raise _no_such_run(args) from None
    row = run_row(saved.info)
    tasks = []
    for name, state in saved.states.items():
        rec = saved.tasks.get(name)
        tasks.append({
            "task": name, "state": state, "attempts": 0 if rec is None else rec.attempts,
            "duration": None if rec is None or rec.duration is None else round(rec.duration, 3),
            "error": None if rec is None else rec.error,
        })
    if args.json:  # --tasks changes only the text
        print_json({**row, "tasks": tasks})
        return OK
    for key, value in text_row(row).items():
        if value is not None:
            print(f"{key:>9}: {value}")
    if args.tasks:
        print()
        table(tasks, ["task", "state", "attempts", "duration", "error"])
    return OK


def _clean(args: argparse.Namespace) -> int:
    deleted = manager_of(args).prune(keep=args.keep)
    print(f"deleted {len(deleted)} run(s)")
    return OK


def _graph(args: argparse.Namespace) -> int:
    from ..export import to_dot, to_text

    wf = _workflow(args)
    if args.json:
        wf.validate()
        order = wf.dag.compile()
        print_json({"workflow": wf.name, "tasks": [
            {"task": name, "upstream": list(order.upstream[name])} for name in order.order]})
        return OK
    if not args.output:
        print(to_text(wf), end="")
        return OK
    import shutil
    import subprocess

    fmt = os.path.splitext(args.output)[1].lstrip(".").lower()
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"-o takes a .svg, .png or .pdf file, got {args.output!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise ValueError(
            "drawing needs Graphviz's `dot` program: install it (apt install graphviz, brew "
            "install graphviz) or write the source with `flowforge export --format dot`"
        )
    subprocess.run([dot, f"-T{fmt}", "-o", args.output], input=to_dot(wf), text=True,
                   check=True)
    print(f"wrote {args.output}")
    return OK


def _resume(args: argparse.Namespace) -> int:
    from ..loading import load, pick

    manager = manager_of(args)
    info = next((r for r in manager.runs() if r.run_id == args.run_id), None)
    if info is None:
        raise ValueError(f"no saved run {args.run_id!r} in {args.state_dir!r}")
    if info.status in ("succeeded", "running"):
        raise ValueError(f"run {args.run_id} is {info.status}: there is nothing to resume")
    target = args.target or info.target
    if not target:
        raise ValueError("the run did not save which file defines its workflow; pass it")
    wf = pick(load(target), info.workflow, target)
    wf.state_dir = args.state_dir
    # The same params and fire time make the same run key: this run resumes the newest
    # run of that key, which must be this one.
    from .._run import run_key

    when = None if info.scheduled_for is None else datetime.fromisoformat(info.scheduled_for)
    params = {**wf.params, **(info.params or {})}
    key = run_key(wf, params, when)
    why = key.differs_from(info)
    if why is not None:
        raise ValueError(f"run {args.run_id} cannot be resumed from {target}: {why}")
    newer = next((r for r in manager.runs(info.workflow) if key.matches(r)), info)
    if newer.run_id != info.run_id:
        raise ValueError(
            f"run {args.run_id} has a newer run of the same file and params "
            f"({newer.run_id}, {newer.status}); resume that one"
        )
    result = wf.run(params=info.params, scheduled_for=when)
    if result.status == "cancelled":
        return CANCELLED
    return OK if result.ok else FAILED


def _cancel(args: argparse.Namespace) -> int:
    from ..persistence.cancelling import CancelRequest

    manager = manager_of(args)
    request = CancelRequest("the command line", os.getpid(), args.force)
    try:
        info = manager.request_cancel(args.run_id, request)
    except KeyError:
        raise _no_such_run(args) from None
    except ValueError as exc:
        print(f"flowforge cancel: {exc}", file=sys.stderr)
        return FAILED
    if not args.wait:
        print(f"asked run {args.run_id} of workflow {info.workflow!r} to cancel")
        return OK
    info = manager.wait_stopped(args.run_id, info.workflow, args.timeout)
    if info.status == "cancelled":
        print(f"run {args.run_id} cancelled; `flowforge resume {args.run_id}` goes on "
              "from where it stopped")
        return OK
    if info.status == "running":
        print(f"flowforge cancel: run {args.run_id} did not stop within {args.timeout:g}s "
              "(a task may be stuck in code that cannot be interrupted); wait longer with "
              "--timeout, or add --force to end its tasks' child processes",
              file=sys.stderr)
    else:
        print(f"flowforge cancel: run {args.run_id} ended {info.status} before the cancel "
              "reached it", file=sys.stderr)
    return FAILED


def _no_such_run(args: argparse.Namespace) -> ValueError:
    """A run id the state folder does not know, in the command line's words."""
    return ValueError(f"no saved run {args.run_id!r} in state folder {args.state_dir!r}; "
                      "see `flowforge history` (or pass --state-dir)")


def _export(args: argparse.Namespace) -> int:
    from ..export import to_definition, to_dot, to_mermaid, to_yaml

    wf = _workflow(args)
    # A definition's calls are written as seen from where it is saved, so that it runs.
    folder = os.path.dirname(os.path.abspath(args.output)) if args.output else None
    if folder is not None and not os.path.isdir(folder):
        raise FileNotFoundError(2, "No such file or directory", args.output)
    if args.format == "yaml":
        text = to_yaml(wf, folder)
    elif args.format == "json":  # the same definition as YAML: it refuses the same
        text = json.dumps(to_definition(wf, folder), indent=2) + "\n"
    else:
        text = (to_mermaid if args.format == "mermaid" else to_dot)(wf)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return OK


def _schedule(args: argparse.Namespace) -> int:
    from ..scheduler import Scheduler

    wf = _workflow(args)
    planned = (wf.definition or {}).get("schedule") or {}
    cron = args.cron or planned.get("cron")
    if not cron:
        raise ValueError("give --cron (the workflow's definition has no schedule:)")
    timezone_name = args.timezone or planned.get("timezone") or "UTC"
    sched = Scheduler(args.state_dir)
    from ..scheduler.lock import SchedulerLockedError

    try:
        sched.claim()  # before the job table changes
    except SchedulerLockedError as exc:
        print(f"flowforge schedule: {exc}", file=sys.stderr)
        return FAILED
    info = sched.add(wf, cron=cron, timezone=timezone_name, name=args.name)
    print(f"job {info.name!r}: {info.schedule}; next run {info.next_run}; Ctrl-C stops it",
          file=sys.stderr)
    sched.run()
    return OK


def _workers(args: argparse.Namespace) -> int:
    from ..executors.dask import DaskExecutor

    ex = DaskExecutor(address=args.address)
    try:
        rows = ex.workers()
    finally:
        ex.shutdown()
    for row in rows:
        row["last_seen"] = (
            None if row["last_seen"] is None
            else datetime.fromtimestamp(row["last_seen"]).isoformat(timespec="seconds")
        )
    output(args, rows, ["address", "threads", "memory_limit", "running", "last_seen",
                         "resources"])
    return OK


def _schema(args: argparse.Namespace) -> int:
    from ..definitions.schema import SCHEMA

    print_json(SCHEMA)
    return OK


def _jobs(args: argparse.Namespace) -> int:
    from ..scheduler.jobs import JobTable, next_run

    table = JobTable(args.state_dir)
    now = datetime.now(timezone.utc)
    rows = []
    for name in table.names():
        row = table.get(name)
        upcoming = next_run(row, now)
        rows.append({
            "job": name, "workflow": row.get("workflow"), "schedule": row.get("schedule"),
            "enabled": row.get("enabled", True),
            "next_run": None if upcoming is None else upcoming.isoformat(timespec="seconds"),
            "last_fire": row.get("last_fire"), "last_status": row.get("last_status"),
        })
    output(args, rows, ["job", "workflow", "schedule", "enabled", "next_run", "last_status"])
    return OK


def _ui(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"flowforge ui: the dashboard needs the web extra ({exc.name} is missing); "
              'install it with: pip install "flowforge[web]"', file=sys.stderr)
        return USAGE
    from ..web import serve

    token = args.token if args.token is not None else os.environ.get("FLOWFORGE_UI_TOKEN") or None
    serve(args.state_dir, args.targets, host=args.host, port=args.port, token=token,
          log_file=args.log_file, allowed_hosts=args.allowed_hosts, max_body=args.max_body)
    return OK


# -- output -------------------------------------------------------------------------------
