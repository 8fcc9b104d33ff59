"""Polling for a condition in tests: what a test waits on (a file, a process's end, a
page's state) is checked every 10 ms, with a deadline that fails the test by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float = 60.0,
               what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
