"""Values from the command line: whole numbers, byte sizes and seconds as argparse
types that refuse a bad value in the flag's words, and a run's params from ``--params``
or ``--params-file``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["byte_size", "params_of", "positive", "seconds", "whole_number"]


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``, refused in plain words."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"needs a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
        return value

    parse.__name__ = "whole number"  # what argparse names in its own messages
    return parse


positive = whole_number(1)


_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1 << 10, "mb": 1000**2, "mib": 1 << 20,
          "gb": 1000**3, "gib": 1 << 30}


def byte_size(text: str) -> int:
    """Bytes from ``1048576``, ``512KiB``, ``2MiB`` or ``2MB``: 1 or more."""
    raw = text.strip().replace(" ", "")
    digits = raw.rstrip("BbIiKkMmGg")
    unit = raw[len(digits):].lower()
    if not digits.isdigit() or unit not in _UNITS or int(digits) < 1:
        msg = (f"takes a size in bytes, 1 or more, like 1048576 or 1MiB (units B, KB, KiB, "
               f"MB, MiB, GB, GiB), got {text!r}")
        raise argparse.ArgumentTypeError(msg)
    return int(digits) * _UNITS[unit]


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    """The params of ``--params`` or ``--params-file`` (``-``: standard input)."""
    if args.params_file is not None:
        flag = f"--params-file {args.params_file}"
        try:
            if args.params_file == "-":
                text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
            else:
                with open(args.params_file, encoding="utf-8") as f:
                    text = f.read()
        except OSError as exc:
            msg = f"{flag}: cannot read it ({exc.strerror or exc}); give a readable JSON file"
            raise ValueError(msg) from exc
    elif args.params:
        flag, text = "--params", args.params
    else:
        return {}
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        msg = f"{flag}: not JSON ({exc}); give a JSON object, like '{{\"limit\": 10}}'"
        raise ValueError(msg) from exc
    if not isinstance(loaded, dict):
        msg = (f"{flag.split()[0]} takes a JSON object, like '{{\"limit\": 10}}', got "
               f"{type(loaded).__name__}")
        raise ValueError(msg)
    return loaded
