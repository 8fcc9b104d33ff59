"""Workflows the web dashboard tests run, in an importable module: the dashboard starts
them in processes of its own (``flowforge run tests.fixture_web``)."""

from __future__ import annotations

import os
import time

from flowforge import task, workflow


def wait_for(path: str, timeout: float = 60.0) -> None:
    """Block until ``path`` exists (the test's go signal), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


with workflow("gated", executor="thread", quiet=True, progress=False) as gated:
    @task
    def prepare(gate="release"):
        return gate

    @task
    def wait(prepare):
        open(prepare + ".started", "w").close()
        wait_for(prepare)
        return "done"

    @task
    def report(wait):
        return wait.upper()


with workflow("flaky", executor="sequential", quiet=True, progress=False) as flaky:
    @task(retries=1, retry_delay=0)
    def boom():
        raise ValueError("bad input row 7")

    @task
    def after(boom):
        return boom


with workflow("needs_n", executor="sequential", quiet=True, progress=False) as needs_n:
    @task
    def total(n):
        return n * 2
