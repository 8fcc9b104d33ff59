"""The dashboard's HTTP API and pages through the ASGI test client: runs, one run, its
errors and tracebacks, workflows and schedules, metrics, starting and cancelling runs in
processes of their own, the token rule, and the published OpenAPI document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from flowforge.web import create_app  # noqa: E402
from flowforge.web.auth import check_bind  # noqa: E402
from tests import fixture_web  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "tests.fixture_web"
LOCAL = "http://localhost"  # a loopback name: the Host rule refuses "testserver"


@pytest.fixture
def state(tmp_path):
    """A state folder holding one failed run of 'flaky' and two successful runs of 'gated'."""
    state = tmp_path / "state"
    gate = tmp_path / "open"
    gate.touch()
    fixture_web.flaky.state_dir = str(state)
    fixture_web.gated.state_dir = str(state)
    try:
        assert fixture_web.flaky.run().status == "failed"
        for _ in range(2):
            assert fixture_web.gated.run({"gate": str(gate)}, fresh=True).ok
    finally:
        fixture_web.flaky.state_dir = fixture_web.gated.state_dir = "state"
    return state


@pytest.fixture
def client(state, monkeypatch):
    """A test client of a dashboard over ``state``, given the fixture workflows."""
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with TestClient(create_app(state, [TARGET]), base_url=LOCAL) as c:
        yield c


def test_runs_are_listed_newest_first_filtered_and_paged(client):
    """GET /runs: newest first, by workflow and status, limit/offset with the total."""
    page = client.get("/api/v1/runs").json()
    assert page["total"] == 3 and page["workflows"] == ["flaky", "gated"]
    started = [r["started"] for r in page["runs"]]
    assert started == sorted(started, reverse=True)
    gated = client.get("/api/v1/runs", params={"workflow": "gated"}).json()
    assert [r["workflow"] for r in gated["runs"]] == ["gated", "gated"]
    failed = client.get("/api/v1/runs", params={"status": "failed"}).json()
    assert [(r["workflow"], r["status"]) for r in failed["runs"]] == [("flaky", "failed")]
    second = client.get("/api/v1/runs", params={"limit": 1, "offset": 1}).json()
    assert second["total"] == 3 and second["runs"][0]["run_id"] == page["runs"][1]["run_id"]
    assert client.get("/api/v1/runs", params={"status": "sleepy"}).status_code == 422


def test_a_run_shows_attempts_errors_tracebacks_and_its_dag(client):
    """GET /runs/{id}: each task's attempts and error, every failed attempt's traceback
    from the log, and the DAG's edges from the workflow's file."""
    run_id = client.get("/api/v1/runs", params={"workflow": "flaky"}).json()["runs"][0]["run_id"]
    view = client.get(f"/api/v1/runs/{run_id}").json()
    assert view["run"]["status"] == "failed"
    boom = next(t for t in view["tasks"] if t["name"] == "boom")
    assert boom["state"] == "failed" and boom["attempts"] == 2
    assert boom["error"] == "ValueError: bad input row 7"
    assert [f["will_retry"] for f in boom["failures"]] == [True, False]
    assert 'raise ValueError("bad input row 7")' in boom["traceback"]
    assert view["graph"]["edges"] == [["boom", "after"]] and view["graph"]["complete"]
    logs = client.get(f"/api/v1/runs/{run_id}/logs").json()
    assert [line["event"] for line in logs["lines"]][0] == "workflow_started"
    assert {line["run_id"] for line in logs["lines"]} == {run_id}


def test_unknown_runs_answer_404_saying_where_to_look(client):
    """A run id that is not in the state folder is a 404 naming the folder and GET /runs."""
    for path in ("/api/v1/runs/nope", "/api/v1/runs/nope/logs", "/api/v1/runs/nope/events"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert "no run 'nope' in state folder" in answer.json()["detail"]
        assert "GET /api/v1/runs" in answer.json()["detail"]
    assert client.post("/api/v1/runs/nope/cancel").status_code == 404


def test_without_the_workflows_file_the_dag_has_no_edges_and_says_why(state):
    """A dashboard not given a workflow's file still lists its tasks, in a grid, and says
    how to get the edges drawn."""
    with TestClient(create_app(state), base_url=LOCAL) as c:
        run_id = c.get("/api/v1/runs", params={"workflow": "gated"}).json()["runs"][0]["run_id"]
        graph = c.get(f"/api/v1/runs/{run_id}").json()["graph"]
    assert graph["edges"] == [] and not graph["complete"]
    assert {n["name"] for n in graph["nodes"]} == {"prepare", "wait", "report"}
    assert "start `flowforge ui` with the file that defines 'gated'" in graph["note"]


def test_workflows_show_success_rate_durations_last_runs_and_schedule(client, state):
    """GET /workflows: success rate, recent durations oldest first, last runs, and each
    scheduled job with its next fire time."""
    from flowforge import Scheduler

    Scheduler(state_dir=str(state)).add(fixture_web.gated, cron="0 9 * * 1-5",
                                        name="gated-daily", timezone="Europe/Berlin")
    views = {v["name"]: v for v in client.get("/api/v1/workflows").json()}
    assert views["flaky"]["success_rate"] == 0.0 and views["gated"]["success_rate"] == 1.0
    assert len(views["gated"]["durations"]) == 2 and len(views["gated"]["last_runs"]) == 2
    assert views["gated"]["startable"] and views["gated"]["params"] == {}
    (job,) = views["gated"]["schedules"]
    assert job["job"] == "gated-daily" and job["timezone"] == "Europe/Berlin"
    berlin = datetime.fromisoformat(job["next_run"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (9, 0) and berlin.weekday() < 5
    assert views["flaky"]["schedules"] == []


def test_health_and_prometheus_metrics(client):
    """GET /health says the server is up and live; GET /metrics is Prometheus text with
    flowforge_ metrics: runs by status, task duration histograms, retries, waiting tasks."""
    from prometheus_client.parser import text_string_to_metric_families

    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["live"] is True
    hub = client.app.state.dashboard.hub
    base = {"workflow": "gated", "run_id": "r1", "ts": 1.0, "attempt": 1, "index": None}
    hub.handle({**base, "kind": "workflow_started", "total": 3})
    hub.handle({**base, "kind": "task_waiting", "task": "wait", "reason": "cpus"})
    hub.handle({**base, "kind": "task_succeeded", "task": "prepare", "duration": 0.2})
    hub.handle({**base, "kind": "task_retrying", "task": "prepare", "delay": 0.0})
    answer = client.get("/api/v1/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert all(name.startswith("flowforge_") for name in families)
    runs = {(s.labels["workflow"], s.labels["status"]): s.value
            for s in families["flowforge_runs"].samples}
    assert runs == {("flaky", "failed"): 1.0, ("gated", "succeeded"): 2.0}
    durations = families["flowforge_task_duration_seconds"]
    assert durations.type == "histogram"
    count = next(s for s in durations.samples if s.name.endswith("_count"))
    assert count.value == 1.0 and count.labels == {"workflow": "gated", "outcome": "succeeded"}
    retries = families["flowforge_task_retries"].samples
    assert any(s.name == "flowforge_task_retries_total" and s.value == 1.0 for s in retries)
    assert "flowforge_tasks_waiting" in families


def test_start_a_run_in_its_own_process_with_params(client, tmp_path):
    """POST /workflows/{name}/runs starts `flowforge run` in a child process with the
    params and answers 202 with its pid and run id; the run then succeeds."""
    gate = tmp_path / "go"
    gate.touch()
    answer = client.post("/api/v1/workflows/gated/runs", json={"params": {"gate": str(gate)}})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["workflow"] == "gated" and body["pid"] > 0 and body["run_id"]

    def finished():
        run = client.get(f"/api/v1/runs/{body['run_id']}").json()["run"]
        return run if run["status"] != "running" else None

    run = wait_until(finished, what="the started run to end")
    assert run["status"] == "succeeded" and run["params"] == {"gate": str(gate)}


def test_params_too_large_for_a_command_line_reach_the_run(client, state):
    """Params over the kernel's 128 KiB limit on one argument (E2BIG) still start the
    run: they go to `flowforge run` on its stdin, not in its argument list."""
    big = "x" * 200_000
    answer = client.post("/api/v1/workflows/needs_n/runs", json={"params": {"n": big}})
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]

    def finished():
        run = client.get(f"/api/v1/runs/{run_id}").json()["run"]
        return run if run["status"] != "running" else None

    run = wait_until(finished, what="the started run to end")
    assert run["status"] == "succeeded" and run["params"] == {"n": big}


def test_start_refuses_unknown_workflows_and_bad_params(client):
    """An unknown workflow is a 404 listing the known ones; params the workflow refuses
    are a 422 saying why, before any process starts."""
    answer = client.post("/api/v1/workflows/nightly/runs", json={"params": {}})
    assert answer.status_code == 404
    assert "no workflow named 'nightly'" in answer.json()["detail"]
    assert "'flaky', 'gated', 'needs_n'" in answer.json()["detail"]
    bad = client.post("/api/v1/workflows/needs_n/runs", json={"params": {}})
    assert bad.status_code == 422 and "cannot run with these params" in bad.json()["detail"]
    assert "'n'" in bad.json()["detail"]


def test_cancel_a_running_run(client, tmp_path):
    """POST /runs/{id}/cancel stops a running run as `flowforge cancel` does (it ends
    cancelled); cancelling it again is a 409."""
    gate = tmp_path / "never"
    body = client.post("/api/v1/workflows/gated/runs",
                       json={"params": {"gate": str(gate)}, "fresh": True}).json()
    wait_until(lambda: os.path.exists(str(gate) + ".started"), what="the task to start")
    run_id = body["run_id"]
    answer = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert answer.status_code == 202 and answer.json()["pid"] == body["pid"]

    def ended():
        status = client.get(f"/api/v1/runs/{run_id}").json()["run"]["status"]
        return status if status != "running" else None

    assert wait_until(ended, what="the run to stop") == "cancelled"
    logs = [json.loads(line) for path in tmp_path.rglob("workflow.log")
            for line in path.read_text().splitlines()]
    finished = [x for x in logs if x.get("event") == "workflow_finished"
                and x.get("run_id") == run_id]
    assert finished and finished[-1]["reason"] == "cancelled from the dashboard"
    again = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "is not running" in again.json()["detail"]


def test_token_is_required_on_every_request(state):
    """With a token, pages, static files, the API and event streams answer 401 without
    it, and accept it as a Bearer header or ?token=; the pages pass it on in a cookie."""
    with TestClient(create_app(state, token="s3cret"), base_url=LOCAL) as c:
        for path in ("/runs", "/static/app.js", "/api/v1/runs", "/api/v1/health",
                     "/api/v1/openapi.json", "/api/v1/runs/x/events", "/api/v1/metrics"):
            refused = c.get(path)
            assert refused.status_code == 401, path
            assert "needs its token" in refused.json()["detail"]
        assert c.post("/api/v1/workflows/gated/runs", json={}).status_code == 401
        assert c.get("/api/v1/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/v1/health", params={"token": "s3cre"}).status_code == 401
        assert c.get("/api/v1/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/v1/health", params={"token": "s3cret"}).status_code == 200
        page = c.get("/runs", params={"token": "s3cret"})
        assert page.status_code == 200 and 'src="/static/app.js"' in page.text
        assert "set-cookie" in page.headers  # what the page's own requests carry


def test_a_non_loopback_address_needs_a_token():
    """Bound to anything but loopback the dashboard refuses to start without a token."""
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "dashboard.example"):
        with pytest.raises(ValueError, match="without a token") as caught:
            check_bind(host, None)
        assert "--token" in str(caught.value) and "FLOWFORGE_UI_TOKEN" in str(caught.value)
        check_bind(host, "s3cret")
    with pytest.raises(ValueError, match="token is empty"):
        check_bind("0.0.0.0", " ")


def test_cli_ui_refuses_a_public_address_without_token(monkeypatch, capsys):
    """`flowforge ui --host 0.0.0.0` without --token or FLOWFORGE_UI_TOKEN exits 2 and
    says what to do."""
    from flowforge.cli import main

    monkeypatch.delenv("FLOWFORGE_UI_TOKEN", raising=False)
    assert main(["ui", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "flowforge ui: refusing to serve the dashboard on 0.0.0.0" in err and "--token" in err


def test_cli_ui_without_the_web_extra_says_how_to_install_it(monkeypatch, capsys):
    """Without the web extra, `flowforge ui` prints the pip install hint and exits 2."""
    from flowforge.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["ui"]) == 2
    assert 'pip install "flowforge[web]"' in capsys.readouterr().err


def test_import_flowforge_loads_no_web_code():
    """import flowforge (and the CLI module) loads neither the dashboard nor its libraries."""
    code = ("import sys, flowforge, flowforge.cli; "
            "print(sorted(m for m in ('flowforge.web', 'fastapi', 'starlette', 'uvicorn', "
            "'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_openapi_document_is_published_with_the_contract_paths(client):
    """GET /api/v1/openapi.json describes every endpoint of the contract."""
    doc = client.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    assert {"/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/events",
            "/api/v1/runs/{run_id}/cancel", "/api/v1/workflows/{name}/runs",
            "/api/v1/health", "/api/v1/metrics"} <= set(paths)
    assert "post" in paths["/api/v1/workflows/{name}/runs"]
    assert "text/event-stream" in paths["/api/v1/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]


def test_one_unreadable_run_file_is_listed_and_breaks_nothing_else(client, state):
    """A garbage .run file in a real state folder: the runs list shows it as
    'unreadable' with the reason naming the file, and the runs list, the workflows,
    the metrics, the other runs' pages and the bad run's own page all keep working."""
    from prometheus_client.parser import text_string_to_metric_families

    good = client.get("/api/v1/runs", params={"workflow": "gated"}).json()["runs"][0]
    bad_file = state / "gated" / "20200101T000000-bad.run"
    bad_file.write_bytes(b"garbage")
    page = client.get("/api/v1/runs")
    assert page.status_code == 200 and page.json()["total"] == 4
    (bad,) = [r for r in page.json()["runs"] if r["status"] == "unreadable"]
    assert bad["run_id"] == "20200101T000000-bad" and bad["workflow"] == "gated"
    assert str(bad_file) in bad["reason"]
    assert {r["status"] for r in page.json()["runs"]} == {"succeeded", "failed", "unreadable"}
    only = client.get("/api/v1/runs", params={"status": "unreadable"}).json()
    assert [r["run_id"] for r in only["runs"]] == [bad["run_id"]]
    views = {v["name"]: v for v in client.get("/api/v1/workflows").json()}
    assert views["gated"]["runs"] == 3 and views["gated"]["success_rate"] == 1.0
    assert "unreadable" in {r["status"] for r in views["gated"]["last_runs"]}
    metrics = client.get("/api/v1/metrics")
    assert metrics.status_code == 200
    runs = {(s.labels["workflow"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(metrics.text) if f.name == "flowforge_runs"
            for s in f.samples}
    assert runs[("gated", "unreadable")] == 1.0 and runs[("gated", "succeeded")] == 2.0
    view = client.get(f"/api/v1/runs/{good['run_id']}")
    assert view.status_code == 200 and view.json()["run"]["status"] == "succeeded"
    assert client.get(f"/runs/{good['run_id']}").status_code == 200
    own = client.get(f"/api/v1/runs/{bad['run_id']}")
    assert own.status_code == 200, own.text
    assert own.json()["run"]["status"] == "unreadable" and own.json()["tasks"] == []
    assert str(bad_file) in own.json()["run"]["reason"]


def test_layered_layout_puts_every_task_right_of_its_upstreams():
    """Each task's column is one past its furthest upstream; rows follow the upstreams."""
    from flowforge.web.layout import grid, layered

    upstream = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["a", "d"], "z": []}
    places = layered(["a", "z", "b", "c", "d", "e"], upstream)
    assert {n: c for n, (c, _) in places.items()} == {"a": 0, "z": 0, "b": 1, "c": 1, "d": 2,
                                                      "e": 3}
    assert places["a"][1] == 0 and places["z"][1] == 1 and {places["b"][1], places["c"][1]} == {0, 1}
    assert grid(["x", "y", "z"], rows=2) == {"x": (0, 0), "y": (0, 1), "z": (1, 0)}
