"""Shared fixtures: every workflow in the tests logs into a temporary folder."""

from __future__ import annotations

import faulthandler
import sys

import pytest

#: No test comes near this; one that hangs (a lost future, a deadlock) ends the suite
#: with every thread's traceback instead of running into CI's limit.
HANG_SECONDS = 300


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Run each test from a temporary folder so default logs/ never lands in the repo."""
    monkeypatch.chdir(tmp_path)
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def opts(tmp_path):
    """Quiet workflow options that log into the test's temporary folder."""
    return {"log_dir": str(tmp_path / "logs"), "quiet": True, "progress": False}
