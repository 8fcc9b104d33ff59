"""Starting and cancelling runs from the dashboard, always in processes of their own.

A start runs ``python -m flowforge run TARGET --workflow NAME --state-dir DIR
--params-file -`` as a child in its own session, so a run outlives the dashboard and a
crash in one never touches the other; the params are checked here first, so a bad request
is answered at once. They reach the child as JSON on its standard input, never in its
argument list: the kernel limits one argument to 128 KiB (``E2BIG``), and an argument list
is visible to every user through ``ps``.

A cancel is what ``flowforge cancel`` does: SIGINT to the process that holds the run's
lock, which stops its tasks, saves, and ends the run ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._workflow import Workflow
    from .reader import StateReader

__all__ = ["LaunchError", "Launcher"]


class LaunchError(Exception):
    """A start or cancel the dashboard refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Launcher:
    """Starts runs of the workflows the server was given (``targets``: name -> (the file
    or module that defines it, the loaded workflow)) and cancels running runs."""

    def __init__(
        self, reader: StateReader, targets: Mapping[str, tuple[str, Workflow]]
    ) -> None:
        self.reader = reader
        self.targets = dict(targets)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, params: Mapping[str, Any], *, fresh: bool = False) -> int:
        """Check ``params`` and start a run of workflow ``name``; the child's pid."""
        found = self.targets.get(name)
        if found is None:
            known = ", ".join(repr(n) for n in sorted(self.targets)) or "none"
            msg = (f"no workflow named {name!r} was given to this server (it knows {known}); "
                   "start flowforge ui with the file that defines it: flowforge ui FILE")
            raise LaunchError(msg, 404)
        target, wf = found
        try:
            if wf.param_types:
                from ..definitions.params import check_params

                check_params(wf, {**wf.params, **params})
            wf.validate(params)
        except Exception as exc:
            raise LaunchError(f"workflow {name!r} cannot run with these params: {exc}",
                              422) from exc
        store = self.reader.manager().store
        if store.is_locked(name):
            owner = store.owner(name) or {}
            msg = (f"workflow {name!r} is already running (process {owner.get('pid')}, run "
                   f"{owner.get('run_id')}); wait for it to end or cancel that run")
            raise LaunchError(msg, 409)
        cmd = [sys.executable, "-m", "flowforge", "run", target, "--workflow", name,
               "--state-dir", self.reader.state_dir, "--params-file", "-"]
        if fresh:
            cmd.append("--fresh")
        data = json.dumps(dict(params)).encode("utf-8")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=_feed_and_reap, args=(proc, data),
                         name=f"flowforge-run-{proc.pid}", daemon=True).start()
        self._procs[proc.pid] = proc
        return proc.pid

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a child this launcher started, once it has ended."""
        proc = self._procs.get(pid)
        return None if proc is None else proc.poll()

    async def run_id_of(self, name: str, pid: int, timeout: float = 5.0) -> str | None:
        """The run id the child ``pid`` is running, once its lock note says so; after it
        ended, its workflow's newest run. None if neither shows within ``timeout``."""
        store = self.reader.manager().store
        proc = self._procs.get(pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owner = await asyncio.to_thread(store.owner, name)
            if owner and owner.get("pid") == pid and owner.get("run_id"):
                return str(owner["run_id"])
            if proc is not None and proc.poll() is not None:
                runs = await asyncio.to_thread(self.reader.runs, name)
                return runs[0].run_id if runs and proc.returncode in (0, 1) else None
            await asyncio.sleep(0.02)
        return None

    def cancel(self, run_id: str) -> int | None:
        """Ask the driver of ``run_id`` to cancel it, through the run's cancel channel
        (see :mod:`flowforge.persistence.cancelling`); the driver's pid."""
        from ..persistence.cancelling import CancelRequest

        manager = self.reader.manager()
        try:
            info = manager.request_cancel(run_id, CancelRequest("the dashboard"))
        except KeyError as exc:
            raise LaunchError(str(exc.args[0]), 404) from None
        except ValueError as exc:
            raise LaunchError(str(exc), 409) from None
        pid = (manager.store.owner(info.workflow) or {}).get("pid")
        return pid if isinstance(pid, int) else None


def _feed_and_reap(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write the params to the child's stdin and close it (its tasks then read an empty
    stdin, as before), then wait for it to end: no zombie holds a lock. In a thread, so a
    child slow to read never holds up the request."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
    except BrokenPipeError:
        pass  # it died before reading: its exit code tells
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    proc.wait()
