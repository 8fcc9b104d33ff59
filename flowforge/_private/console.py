"""A terminal writer that keeps one status line (the progress bar) below log lines."""

from __future__ import annotations

import os
import threading
from typing import TextIO

__all__ = ["Console"]

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}


class Console:
    """Writes whole lines to ``stream``; a status line is redrawn under them on a TTY."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._status = ""
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.colour = self.tty and "NO_COLOR" not in os.environ

    def paint(self, text: str, colour: str) -> str:
        """``text`` in ``colour`` when colour is on (a TTY, and NO_COLOR unset)."""
        if not self.colour:
            return text
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"

    def line(self, text: str) -> None:
        with self._lock:
            try:
                if self._status:
                    self._stream.write("\r\x1b[2K")
                self._stream.write(text + "\n")
                if self._status:
                    self._stream.write(self._status)
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def status(self, text: str) -> None:
        """Replace the status line (only on a TTY); an empty text clears it."""
        if not self.tty:
            return
        with self._lock:
            self._status = text
            try:
                self._stream.write("\r\x1b[2K" + text)
                self._stream.flush()
            except (OSError, ValueError):
                pass
