"""Live events: the run-side listener (free when nobody watches, never blocking, never
breaking a run) and the dashboard's SSE stream, which sees a task's events while it runs
and always ends with the run's saved final status."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import pytest

from flowforge import task, workflow
from flowforge.events import TaskStarted, TaskSucceeded
from flowforge.listeners.live import WATCHERS, LiveListener, encode

pytest.importorskip("fastapi", reason="the web extra is not installed")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from flowforge.web import create_app  # noqa: E402
from tests import fixture_web  # noqa: E402
from tests.waiting import wait_until  # noqa: E402


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def started(n=1, run_id="r1"):
    return TaskStarted(workflow="w", run_id=run_id, timestamp=1.0, task=f"t{n}", attempt=1)


def test_no_watchers_costs_one_clock_read_per_event(tmp_path, monkeypatch):
    """With nobody watching, an event costs a clock read and a comparison: the folder is
    listed when the run starts and then at most once a second."""
    (tmp_path / WATCHERS).mkdir()
    clock = FakeClock()
    listener = LiveListener(tmp_path, clock=clock)
    calls = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: calls.append(p) or real(p))
    from flowforge.bus import EventBus

    detach = listener.attach(EventBus())
    for n in range(1000):
        listener.handle(started(n))
    assert len(calls) == 1 and listener.watchers == () and listener._sock is None
    clock.now += 1.0
    listener.handle(started())
    assert len(calls) == 2
    detach()


def test_a_run_with_no_watcher_folder_attaches_no_listener(tmp_path, opts, monkeypatch):
    """A state folder no dashboard watches gets no live listener, so the engine builds no
    events for one."""
    attached = []
    monkeypatch.setattr(LiveListener, "attach",
                        lambda self, bus: attached.append(self) or (lambda: None))
    with workflow("plain", executor="sequential", state_dir=str(tmp_path / "s"), **opts) as wf:
        @task
        def one():
            return 1

    assert wf.run().ok and attached == []
    (tmp_path / "s" / WATCHERS).mkdir()
    assert wf.run(fresh=True).ok and len(attached) == 1


def test_datagrams_reach_a_watcher_and_full_or_gone_ones_never_block(tmp_path):
    """Events reach a bound socket as JSON; a full queue drops them without blocking; a
    socket whose server is gone is forgotten."""
    folder = tmp_path / WATCHERS
    folder.mkdir()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(folder / "1.sock"))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(folder / "2.sock"))
    stale.close()  # its file stays: sending to it is refused
    listener = LiveListener(tmp_path, clock=FakeClock())
    from flowforge.bus import EventBus

    detach = listener.attach(EventBus())
    assert len(listener.watchers) == 2
    listener.handle(TaskSucceeded(workflow="w", run_id="r1", timestamp=2.0, task="load",
                                  attempt=2, duration=0.5))
    msg = json.loads(receiver.recv(65536))
    assert msg == {"workflow": "w", "run_id": "r1", "kind": "task_succeeded", "ts": 2.0,
                   "task": "load", "attempt": 2, "index": None, "duration": 0.5}
    assert listener.watchers == (str(folder / "1.sock"),)  # the stale one is forgotten
    began = time.monotonic()
    for n in range(20_000):  # nobody reads: the queue fills, the rest is dropped
        listener.handle(started(n))
    assert time.monotonic() - began < 10
    receiver.setblocking(False)
    got = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            receiver.recv(65536)
            got += 1
    assert 0 < got < 20_000
    detach()
    receiver.close()


def test_a_failing_live_listener_never_breaks_a_run(tmp_path, opts, monkeypatch):
    """Whatever goes wrong while sending live events, the run succeeds."""
    state = tmp_path / "s"
    (state / WATCHERS).mkdir(parents=True)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(state / WATCHERS / "1.sock"))

    def broken(self, data):
        raise RuntimeError("the network is on fire")

    monkeypatch.setattr(LiveListener, "_send", broken)
    with workflow("sturdy", executor="sequential", state_dir=str(state), **opts) as wf:
        @task
        def one():
            return 1

    assert wf.run().ok
    receiver.close()


def test_failure_datagrams_carry_the_error_text():
    """A failure's datagram carries its error text and whether it will be retried."""
    from flowforge.events import TaskFailed

    msg = json.loads(encode(TaskFailed(workflow="w", run_id="r", timestamp=1.0, task="t",
                                       attempt=1, duration=0.1, error=ValueError("bad row"),
                                       will_retry=True, index=3)))
    assert msg["error"] == "ValueError: bad row" and msg["will_retry"] and msg["index"] == 3


# -- the SSE stream, through a real server -----------------------------------------------


@contextlib.contextmanager
def serving(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="the server to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def sse_events(response):
    """(event, data) pairs from an SSE response, as they arrive."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and event is not None:
            yield event, json.loads("\n".join(data))
            event, data = None, []


def run_in_thread(wf, params):
    """Run ``wf`` in a thread; returns the thread and a dict that gets the result."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", wf.run(params, fresh=True)),
                              daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def gated(tmp_path):
    """The fixture's 'gated' workflow saving into this test's state folder."""
    wf = fixture_web.gated
    wf.state_dir = str(tmp_path / "s")
    yield wf
    wf.state_dir = "state"


def first_run_id(base):
    runs = httpx.get(base + "/api/v1/runs").json()["runs"]
    return runs[0]["run_id"] if runs else None


def test_sse_shows_a_tasks_events_while_it_runs_and_then_the_end(tmp_path, gated):
    """The stream shows the blocked task running, then, when the test releases it, its
    success and the next task's events as they happen, then the run's final status."""
    gate = tmp_path / "gate"
    with serving(create_app(tmp_path / "s")) as base:
        assert (tmp_path / "s" / WATCHERS).is_dir()  # the server is watching
        thread, out = run_in_thread(gated, {"gate": str(gate)})
        try:
            wait_until(lambda: os.path.exists(str(gate) + ".started"), what="the task to start")
            run_id = wait_until(lambda: first_run_id(base), what="the run to be saved")
            seen = []
            with httpx.stream("GET", f"{base}/api/v1/runs/{run_id}/events",
                              timeout=httpx.Timeout(30.0)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = sse_events(response)
                for event, data in events:
                    seen.append((event, data))
                    states = ({t["name"]: t["state"] for t in data["tasks"]}
                              if event == "snapshot" else {data.get("task"): data.get("state")})
                    if states.get("wait") == "running":
                        break
                assert seen[0][0] == "snapshot"
                assert thread.is_alive()  # the task is still blocked: this is live
                gate.touch()
                for event, data in events:
                    seen.append((event, data))
                    if event == "run":
                        break
        finally:
            gate.touch()
            thread.join(30)
    tasks = [(d["task"], d["state"]) for e, d in seen if e == "task" and d.get("index") is None]
    assert ("wait", "succeeded") in tasks and ("report", "succeeded") in tasks
    assert tasks.index(("wait", "succeeded")) < tasks.index(("report", "succeeded"))
    assert any(d.get("kind") == "task_started" and d["task"] == "report"
               for e, d in seen if e == "task")  # a live event, not only a re-read
    final = seen[-1][1]
    assert seen[-1][0] == "run" and final["run"]["status"] == "succeeded"
    assert {t["name"]: t["state"] for t in final["tasks"]} == {
        "prepare": "succeeded", "wait": "succeeded", "report": "succeeded"}
    assert out["result"].ok


def test_sse_never_misses_the_end_even_without_live_events(tmp_path, gated):
    """A run that sends no live events (it started before any dashboard watched) is still
    followed from the state folder: finished tasks, then the final status, then the end."""
    gate = tmp_path / "gate"
    thread, out = run_in_thread(gated, {"gate": str(gate)})  # nobody watches yet
    try:
        wait_until(lambda: os.path.exists(str(gate) + ".started"), what="the task to start")
        with serving(create_app(tmp_path / "s", poll_s=0.2)) as base:
            run_id = first_run_id(base)
            seen = []
            with httpx.stream("GET", f"{base}/api/v1/runs/{run_id}/events",
                              timeout=httpx.Timeout(30.0)) as response:
                events = sse_events(response)
                seen.append(next(events))
                gate.touch()
                seen.extend(events)  # the server closes the stream after the final event
    finally:
        gate.touch()
        thread.join(30)
    assert seen[0][0] == "snapshot"
    assert {t["name"]: t["state"] for t in seen[0][1]["tasks"]}["wait"] == "pending"
    assert not any(d.get("kind") for e, d in seen if e == "task")  # no live event at all
    assert seen[-1][0] == "run" and seen[-1][1]["run"]["status"] == "succeeded"
    assert out["result"].ok


def test_sse_of_a_finished_run_sends_snapshot_and_end_at_once(tmp_path, gated):
    """Watching a run that has ended gives its snapshot and its final status, then closes."""
    gate = tmp_path / "gate"
    gate.touch()
    assert gated.run({"gate": str(gate)}).ok
    from fastapi.testclient import TestClient

    with TestClient(create_app(tmp_path / "s"), base_url="http://localhost") as client:
        run_id = client.get("/api/v1/runs").json()["runs"][0]["run_id"]
        text = client.get(f"/api/v1/runs/{run_id}/events").text
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert names == ["snapshot", "run"] and '"status":"succeeded"' in text
