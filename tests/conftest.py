"""Shared fixtures: every workflow in the tests logs into a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Run each test from a temporary folder so default logs/ never lands in the repo."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def opts(tmp_path):
    """Quiet workflow options that log into the test's temporary folder."""
    return {"log_dir": str(tmp_path / "logs"), "quiet": True, "progress": False}
