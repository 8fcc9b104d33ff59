"""Tasks defined in an importable module, so process workers import them by reference."""

from __future__ import annotations

import os
import threading

from flowforge import task


@task
def add_one(x):
    return x + 1


@task
def double(x):
    return x * 2


def crash(code=3):
    os._exit(code)


class Unpicklable(Exception):
    """An exception holding a lock: it cannot be pickled."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class NeedsTwoArgs(Exception):
    """Pickles, but fails to unpickle (its __init__ needs two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_unpicklable():
    raise Unpicklable("holds a lock")


def raise_bad_str():
    raise BadStr()


def raise_needs_two():
    raise NeedsTwoArgs(1, 2)


def pid():
    return os.getpid()
