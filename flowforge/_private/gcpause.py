"""Keep the cycle collector away from the objects a run is made of.

Preparing a run of 100,000 tasks (binding, fingerprints, reading a journal, the engine's
tables) makes about a million small objects, none of them in a cycle, that live until
the run ends. Left alone, the collector walks all of them at every full collection
while tasks run; merely pausing it defers the same walk to the first collection after.

So :func:`preparing` pauses collection while the run is prepared, then *freezes* every
tracked object (``gc.freeze()``: a constant-time move to a generation the collector
skips) and :func:`finished` thaws them when the run is over. Objects the tasks create
while the run goes on are collected as usual. A side effect worth knowing: cyclic
garbage that existed before the run is not collected until it ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["finished", "paused_gc", "preparing"]

_frozen_runs = 0
_lock = threading.Lock()


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable automatic collection inside the block (nests; restores the old setting)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def preparing() -> Iterator[None]:
    """Prepare a run with collection paused; on success freeze what exists (pair every
    successful block with one :func:`finished`)."""
    global _frozen_runs
    with paused_gc():
        yield
        with _lock:
            gc.freeze()
            _frozen_runs += 1


def finished() -> None:
    """A run prepared under :func:`preparing` is over: thaw once no run is left."""
    global _frozen_runs
    with _lock:
        _frozen_runs -= 1
        if _frozen_runs == 0:
            gc.unfreeze()
