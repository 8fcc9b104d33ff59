"""Listeners that turn a run's events into logs and a progress display."""

from __future__ import annotations

from .logging import LoggingListener
from .progress import ProgressListener

__all__ = ["LoggingListener", "ProgressListener"]
