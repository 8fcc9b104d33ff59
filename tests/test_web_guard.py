"""Which requests reach the dashboard: a body over the limit (413, also chunked), a
foreign Host (400, unless allowed), a cross-site Origin or Referer on a state-changing
request (403), a form or text body (415); the token cookie and Referrer-Policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from flowforge.web import create_app  # noqa: E402
from tests.test_web_live import serving  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = "http://localhost"
MIB = 1 << 20


@pytest.fixture
def client(tmp_path):
    """A dashboard over an empty state folder, given the fixture workflows."""
    with TestClient(create_app(tmp_path / "s", ["tests.fixture_web"]), base_url=LOCAL) as c:
        yield c


# -- cross-site requests ------------------------------------------------------------------


def test_a_post_from_another_sites_page_is_refused(client):
    """A POST whose Origin is another site is a 403 naming the Origin, for starting and
    cancelling runs alike; an opaque "null" origin too."""
    for origin in ("https://evil.example", "http://localhost.evil.example", "null"):
        for path in ("/api/v1/workflows/gated/runs", "/api/v1/runs/nope/cancel"):
            answer = client.post(path, json={}, headers={"Origin": origin})
            assert answer.status_code == 403, (origin, path, answer.text)
            detail = answer.json()["detail"]
            assert f"Origin {origin!r} is not this dashboard's own origin" in detail
            assert "http://localhost" in detail


def test_a_foreign_referer_without_origin_is_refused(client):
    """Without an Origin header, the Referer's origin must be the dashboard's own."""
    answer = client.post("/api/v1/runs/nope/cancel",
                         headers={"Referer": "https://evil.example/page?x=1"})
    assert answer.status_code == 403
    assert "Referer 'https://evil.example/page?x=1'" in answer.json()["detail"]
    own = client.post("/api/v1/runs/nope/cancel", headers={"Referer": LOCAL + "/runs/nope"})
    assert own.status_code == 404  # through the guard, to the handler


def test_same_origin_and_origin_less_requests_pass(client):
    """The dashboard's own origin (http or, behind a TLS proxy, https) passes, and so do
    requests without Origin or Referer, like curl's and scripts'."""
    for headers in ({"Origin": LOCAL}, {"Origin": "https://localhost"}, {}):
        answer = client.post("/api/v1/workflows/nightly/runs", json={}, headers=headers)
        assert answer.status_code == 404 and "no workflow named 'nightly'" in answer.text
        assert client.post("/api/v1/runs/nope/cancel", headers=headers).status_code == 404


def test_form_and_text_bodies_are_refused(client):
    """A form (even an empty one) or a text/plain body, what a cross-site page can post
    without asking first, is a 415 saying to send JSON; JSON passes."""
    bodies = [("application/x-www-form-urlencoded", b""), ("multipart/form-data; boundary=x",
              b"--x--\r\n"), ("text/plain", b'{"params": {}}'), ("", b'{"params": {}}')]
    for kind, body in bodies:
        headers = {"Content-Type": kind} if kind else {}
        answer = client.post("/api/v1/workflows/nightly/runs", content=body, headers=headers)
        assert answer.status_code == 415, (kind, answer.text)
        assert "send JSON with Content-Type: application/json" in answer.json()["detail"]
    ok = client.post("/api/v1/workflows/nightly/runs", content=b'{"params": {}}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 404


def test_a_foreign_host_is_refused_unless_allowed(tmp_path):
    """A request whose Host is not a loopback name or the bound address is a 400 naming
    the --allowed-host fix (a DNS-rebinding page cannot read or post); an allowed host,
    with or without its port, passes."""
    with TestClient(create_app(tmp_path / "s"), base_url=LOCAL) as c:
        for path in ("/api/v1/runs", "/runs", "/api/v1/metrics"):
            answer = c.get(path, headers={"Host": "evil.example:8765"})
            assert answer.status_code == 400
            assert answer.json()["detail"] == (
                "Host 'evil.example:8765' is not this dashboard's address; start "
                "`flowforge ui --allowed-host evil.example` to allow it")
        posted = c.post("/api/v1/runs/x/cancel", headers={"Host": "evil.example"})
        assert posted.status_code == 400
        for host in ("localhost:8765", "127.0.0.1:9000", "127.3.2.1", "[::1]:8765"):
            assert c.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
    app = create_app(tmp_path / "s", host="10.0.0.5", token="t",
                     allowed_hosts=["dash.example", "other.example:9000"])
    with TestClient(app, base_url=LOCAL, headers={"Authorization": "Bearer t"}) as c:
        for host in ("dash.example", "DASH.example:1234", "other.example:9000", "10.0.0.5:80"):
            assert c.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
        assert c.get("/api/v1/health", headers={"Host": "other.example:9001"}).status_code == 400


# -- request size -------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_any_other_rule(client):
    """A 2 MiB body is a 413 naming the limit and --max-body, even from a foreign host
    and origin with a form type: the size is checked first."""
    answer = client.post("/api/v1/workflows/gated/runs", content=b"x" * (2 * MIB),
                         headers={"Content-Type": "text/plain", "Host": "evil.example",
                                  "Origin": "https://evil.example"})
    assert answer.status_code == 413
    detail = answer.json()["detail"]
    assert f"({2 * MIB} bytes) is over this dashboard's limit of {MIB} bytes" in detail
    assert "flowforge ui --max-body SIZE" in detail


def test_a_chunked_body_is_counted_as_it_arrives(tmp_path):
    """Through a real server: a body sent in chunks without Content-Length is refused
    with a 413 once it passes the limit; one under it reaches the handler."""
    sent = []

    def chunks(total):
        for _ in range(total // 65536):
            sent.append(65536)
            yield b" " * 65536

    with serving(create_app(tmp_path / "s", max_body=MIB)) as base:
        answer = httpx.post(base + "/api/v1/workflows/nightly/runs", content=chunks(2 * MIB),
                            headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 413 and "limit of 1048576 bytes" in answer.text
        assert "Content-Length" not in answer.request.headers
        small = httpx.post(base + "/api/v1/workflows/nightly/runs", timeout=30,
                           content=iter([b'{"params":', b" {}}"]),
                           headers={"Content-Type": "application/json"})
        assert small.status_code == 404 and "no workflow named 'nightly'" in small.text


def test_max_body_must_be_a_positive_number_of_bytes(tmp_path):
    """create_app(max_body=0) is refused at once, naming the option and the value."""
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match=f"max_body is a number of bytes .*got {bad!r}"):
            create_app(tmp_path / "s", max_body=bad)


def test_cli_ui_takes_allowed_hosts_and_max_body(tmp_path):
    """`flowforge ui --allowed-host dash.example --max-body 1KiB` serves dash.example and
    refuses a 2 KiB body; a size it cannot read is a usage error naming the flag."""
    from tests.test_web_browser import free_port

    port = free_port()
    out = open(tmp_path / "ui.out", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", "ui", "--state-dir", str(tmp_path / "s"),
         "--port", str(port), "--allowed-host", "dash.example", "--max-body", "1KiB"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO}, stdout=out,
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/v1"

    def up():
        assert proc.poll() is None, (tmp_path / "ui.out").read_text()
        try:
            return httpx.get(base + "/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, what="flowforge ui to start")
        assert httpx.get(base + "/health", headers={"Host": "dash.example"}).status_code == 200
        assert httpx.get(base + "/health", headers={"Host": "evil.example"}).status_code == 400
        big = httpx.post(base + "/runs/x/cancel", content=b"{}" * 1024,
                         headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and "limit of 1024 bytes" in big.text
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
    bad = subprocess.run([sys.executable, "-m", "flowforge", "ui", "--max-body", "lots"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert bad.returncode == 2
    assert "--max-body: takes a size in bytes" in bad.stderr and "'lots'" in bad.stderr


# -- the token and where it travels -------------------------------------------------------


def test_every_response_says_referrer_policy_no_referrer(client):
    """Pages, the API, static files and the guard's own refusals send
    Referrer-Policy: no-referrer, so a token in a URL never leaves in a Referer."""
    answers = [client.get("/runs"), client.get("/api/v1/runs"), client.get("/static/app.js"),
               client.get("/api/v1/runs", headers={"Host": "evil.example"}),
               client.post("/api/v1/runs/x/cancel", headers={"Origin": "https://evil.example"})]
    for answer in answers:
        assert answer.headers["referrer-policy"] == "no-referrer", answer.request.url


def test_the_token_link_sets_a_strict_http_only_cookie(tmp_path):
    """Opening a page with ?token= sets an HttpOnly, SameSite=Strict cookie; after that,
    requests with only the cookie pass, a wrong cookie does not, and the page no longer
    puts the token in its script and style URLs."""
    app = create_app(tmp_path / "s", token="s3cret")
    with TestClient(app, base_url=LOCAL) as c:
        page = c.get("/runs", params={"token": "s3cret"})
        assert page.status_code == 200 and "token=" not in page.text
        cookie = page.headers["set-cookie"]
        name, _, rest = cookie.partition("=")
        value = rest.split(";")[0]
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert value == "s3cret" and {"httponly", "samesite=strict", "path=/"} <= flags
    with TestClient(app, base_url=LOCAL) as fresh:
        assert fresh.get("/api/v1/runs").status_code == 401
        for path in ("/api/v1/runs", "/static/app.js", "/runs"):
            answer = fresh.get(path, headers={"Cookie": f"{name}=s3cret"})
            assert answer.status_code == 200, path
        assert fresh.get("/api/v1/runs", headers={"Cookie": f"{name}=wrong"}).status_code == 401
        bearer = fresh.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200 and "set-cookie" not in bearer.headers
