"""One run's Server-Sent Events stream: a snapshot, live task events, a final word.

The stream opens with a ``snapshot`` (the run and every task's state), then passes on
each live event of the run as a ``task`` event (or ``workflow`` for the run's own). Live
datagrams may be dropped, so about once a second it also re-reads the run from the state
folder: a task that finished without its event reaching us is sent from there, and when
the saved run has ended the stream sends a last ``run`` event with the final status and
every task, then closes. That is why a watcher never misses the end of a run, even one
whose process died. A comment line every 15 s keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .reader import FINAL

if TYPE_CHECKING:
    from .live import LiveHub
    from .reader import StateReader

__all__ = ["event_stream", "sse"]

_KEEPALIVE_S = 15.0


def sse(event: str, data: Any) -> bytes:
    """One SSE message."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {text}\n\n".encode()


async def event_stream(
    run_id: str, reader: StateReader, hub: LiveHub, *, poll_s: float = 1.0,
    closing: Callable[[], bool] = lambda: False,
) -> AsyncIterator[bytes]:
    """The SSE messages for ``run_id``, until the run has ended or ``closing()`` says the
    server is stopping (the browser then reconnects to the next server, if any)."""
    sub = hub.subscribe(run_id)  # before the snapshot: nothing falls between the two
    try:
        view = await asyncio.to_thread(reader.run_view, run_id, hub.tasks(run_id),
                                       details=False)
        if view is None:
            return
        yield b"retry: 2000\n\n"
        yield sse("snapshot", view)
        if view["run"]["status"] in FINAL:
            yield sse("run", view)
            return
        sent = {t["name"]: t["state"] for t in view["tasks"]}
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + poll_s
        quiet_since = loop.time()
        while not closing():
            wait = max(0.0, next_poll - loop.time())
            try:
                msg = await asyncio.wait_for(sub.queue.get(), wait)
            except asyncio.TimeoutError:
                msg = None
            if msg is not None:
                quiet_since = loop.time()
                if msg.get("task") is not None:
                    if msg.get("index") is None and "state" in msg:
                        sent[msg["task"]] = msg["state"]
                    yield sse("task", msg)
                else:
                    yield sse("workflow", msg)
                    if msg.get("kind") == "workflow_finished":
                        next_poll = loop.time()  # its summary is saved: read it now
            if sub.lagged or loop.time() >= next_poll:
                sub.lagged = False
                began = time.perf_counter()
                view = await asyncio.to_thread(reader.run_view, run_id, hub.tasks(run_id),
                                               details=False)
                if view is None:  # deleted while we watched
                    yield sse("run", {"run": None, "tasks": []})
                    return
                if view["run"]["status"] in FINAL:
                    yield sse("run", view)
                    return
                for task in view["tasks"]:
                    if sent.get(task["name"]) != task["state"]:
                        sent[task["name"]] = task["state"]
                        yield sse("task", {**task, "task": task["name"], "source": "state"})
                # a huge run's journal takes long to read: read it less often
                spent = time.perf_counter() - began
                next_poll = loop.time() + max(poll_s, 20 * spent)
            if loop.time() - quiet_since >= _KEEPALIVE_S:
                quiet_since = loop.time()
                yield b": keep-alive\n\n"
    finally:
        hub.unsubscribe(sub)
