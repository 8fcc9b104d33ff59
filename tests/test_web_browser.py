"""The dashboard in a real headless Chromium (Debian's ``chromium`` with its
``chromedriver``, driven by Selenium): the runs page leads to a run the test started,
whose task turns from running to succeeded without a reload."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium",
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
DRIVER = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver")
               if p and os.path.exists(p)), None)

if not (CHROMIUM and DRIVER) and not os.environ.get("CI"):
    pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver; "
                ".ci/run installs them)", allow_module_level=True)

pytest.importorskip("fastapi", reason="the web extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
def dashboard(tmp_path):
    """`flowforge ui tests.fixture_web` serving a fresh state folder on a free port."""
    yield from _serve(tmp_path)


TOKEN = "t0k/en s3cret"  # a slash and a space: the cookie must carry it intact


@pytest.fixture
def token_dashboard(tmp_path):
    """The same, started with --token."""
    yield from _serve(tmp_path, "--token", TOKEN)


def _serve(tmp_path, *extra):
    assert CHROMIUM and DRIVER, "CI must have chromium and chromedriver (see .ci/run)"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": REPO}
    output = open(tmp_path / "ui.out", "w")  # a file, not a pipe: a full pipe would block it
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", "ui", "tests.fixture_web", "--state-dir",
         str(tmp_path / "s"), "--port", str(port), *extra],
        cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if http("GET", base + "/api/v1/health")[0] in (200, 401):
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "ui.out").read_text()
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    yield base
    proc.terminate()
    proc.wait(30)
    output.close()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def test_a_task_turns_from_running_to_succeeded_without_a_reload(dashboard, browser, tmp_path):
    """Open the runs page, click into the run the test started, see its blocked task
    running, release it, and see it succeed (and the run end) in the same page."""
    gate = tmp_path / "gate"
    status, started = http("POST", dashboard + "/api/v1/workflows/gated/runs",
                           {"params": {"gate": str(gate)}})
    assert status == 202 and started["run_id"], started
    run_id = started["run_id"]
    # rows are redrawn as events arrive: an element found a moment ago may be replaced
    wait = WebDriverWait(browser, 30, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException])
    try:
        browser.get(dashboard + "/runs")
        wait.until(lambda d: d.find_element(By.LINK_TEXT, run_id).click() or True)
        cell = '#tasks tr[data-task="wait"] .state'
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "running")
        assert browser.current_url.endswith("/runs/" + run_id)
        wait.until(lambda d: "state-running" in d.find_element(
            By.CSS_SELECTOR, '#graph g.node[data-task="wait"]').get_attribute("class"))
        browser.execute_script("window.__sameDocument = 'yes'")  # lost on any reload
        gate.touch()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "succeeded")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#run-status .state").text
                   == "succeeded")
        assert browser.execute_script("return window.__sameDocument") == "yes"
        wait.until(lambda d: "state-succeeded" in d.find_element(
            By.CSS_SELECTOR, '#graph g.node[data-task="wait"]').get_attribute("class"))
        edges = browser.find_elements(By.CSS_SELECTOR, "#graph path.edge")
        assert len(edges) == 2  # prepare -> wait -> report
        shot = tmp_path / "run.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        gate.touch()


def test_the_start_form_posts_from_the_page_and_the_token_lives_in_a_cookie(
        token_dashboard, browser, tmp_path):
    """Opened from a ?token= link, the page drops the token from its address; its start
    form's POST passes the cross-site rules (same Origin, JSON), and the run's live
    events arrive through the token cookie, which no script can read."""
    from urllib.parse import quote

    gate = tmp_path / "gate"
    wait = WebDriverWait(browser, 30, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException])
    try:
        browser.get(token_dashboard + "/workflows?token=" + quote(TOKEN, safe=""))
        form = '[data-workflow="gated"] textarea'
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, form))
        assert browser.current_url == token_dashboard + "/workflows"
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly
        box.clear()
        box.send_keys(json.dumps({"gate": str(gate)}))
        browser.find_element(By.CSS_SELECTOR, '[data-workflow="gated"] button').click()
        wait.until(lambda d: "/runs/" in d.current_url)
        cell = '#tasks tr[data-task="wait"] .state'
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "running")
        gate.touch()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "succeeded")
        assert "token" not in browser.current_url
    finally:
        gate.touch()
