"""Which earlier run a new run resumes: the run key.

A run resumes the newest run of its workflow that has the same key and did not succeed.
The key is the workflow's name, the file that defined it (a loaded definition's file, or
the Python file whose code created the workflow) and its params, plus the fire time for
a scheduled run. So a different script that happens to use the same workflow name, a run
with other params, and tomorrow's fire of a daily job all start fresh; the plan says
which earlier run was not resumed and why. A run saved before keys existed matches on
its params alone.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .records import RunInfo

__all__ = ["RunKey"]


@dataclass(frozen=True)
class RunKey:
    """What a run must share with an earlier one to resume it (see the module docstring)."""

    defined_in: str | None
    params_digest: str
    scheduled_for: str | None = None
    params: Mapping[str, Any] | None = None  # to name the params that differ

    @classmethod
    def of(cls, defined_in: str | None, params: Mapping[str, Any],
           scheduled_for: str | None = None) -> RunKey:
        where = os.path.realpath(defined_in) if defined_in else None
        return cls(where, params_digest(params), scheduled_for, dict(params))

    def matches(self, info: RunInfo) -> bool:
        return self.differs_from(info) is None

    def differs_from(self, info: RunInfo) -> str | None:
        """Why ``info`` is not a run of this key (None: it is)."""
        if info.params_digest is None:  # saved before run keys: params alone decide
            if info.params is not None and self.params is not None and (
                dict(info.params) != dict(self.params)
            ):
                return f"it ran with other params ({_differing(info.params, self.params)})"
            return None
        if self.scheduled_for != info.scheduled_for:
            if info.scheduled_for is None:
                return "it was not a scheduled run"
            return f"it was the scheduled run for {info.scheduled_for}"
        if self.defined_in and info.defined_in and self.defined_in != info.defined_in:
            return f"it was defined in another file ({info.defined_in})"
        if self.params_digest != info.params_digest:
            if info.params is None or self.params is None:
                return "it ran with other params"
            return f"it ran with other params ({_differing(info.params, self.params)})"
        return None


def params_digest(params: Mapping[str, Any]) -> str:
    """A digest of a run's params (their names and values)."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(params):
        h.update(name.encode() + b"\0")
        try:
            h.update(pickle.dumps(params[name], protocol=5))
        except Exception:  # an unpicklable param: its repr is the best there is
            h.update(repr(params[name]).encode())
    return h.hexdigest()


def _differing(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The names of the params that differ (values may be secrets: never shown)."""
    def same(k: str) -> bool:
        try:
            return k in old and k in new and bool(old[k] == new[k])
        except Exception:  # an array's == is not a bool
            return False

    names: Iterable[str] = sorted(k for k in set(old) | set(new) if not same(k))
    listed = ", ".join(repr(n) for n in names)
    return f"{listed} differ" if listed else "values that could not be compared"
