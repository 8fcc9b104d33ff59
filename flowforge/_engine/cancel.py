"""The one way to stop a run: a :class:`CancelToken`.

Whatever stops a run asks its token, naming a :class:`Stop` cause and a reason:

* ``FAIL_FAST``: a task failed under ``on_error="fail_fast"``;
* ``STATE``: saving an outcome failed (a full disk): nothing more can be kept;
* ``TIMEOUT``: the run's ``timeout=`` passed;
* ``CANCEL``: Ctrl-C, or a cancel request from outside the run.

From the first request on, the loop starts nothing new. ``FAIL_FAST`` and ``STATE`` let
the attempts already running finish (their results are kept); ``TIMEOUT`` and ``CANCEL``
stop them too (a process worker is killed, a thread is abandoned). A later, stronger
request upgrades an earlier one. The token may be cancelled from any thread (the cancel
channel's watch, :mod:`flowforge.persistence.cancelling`, calls ``Engine.cancel``): it
then wakes the loop, through the callback the engine gave it, whether the loop waits for
running attempts or for a retry that is due later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from enum import Enum

__all__ = ["SIGNAL_MAIN", "CancelToken", "Interrupter", "Stop", "interrupter_for"]


class Stop(Enum):
    """Why a run stops, and whether its running attempts are stopped too."""

    FAIL_FAST = "fail_fast"
    STATE = "state"
    TIMEOUT = "timeout"
    CANCEL = "cancel"

    @property
    def stops_running(self) -> bool:
        """True when attempts already running are stopped, not left to finish."""
        return self is Stop.TIMEOUT or self is Stop.CANCEL


class CancelToken:
    """Says whether the run is stopping, why, and whether running attempts stop too.

    ``stopping`` is a plain attribute the loop reads on its hot path."""

    __slots__ = ("stopping", "stop_running", "causes", "reason", "_lock", "_wake")

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self.stopping = False
        self.stop_running = False
        self.causes: set[Stop] = set()
        self.reason = ""  # the first reason given: what the cancelled tasks are told
        self._lock = threading.Lock()
        self._wake = wake

    def cancel(self, cause: Stop, reason: str) -> bool:
        """Ask the run to stop; True if this request changed what the loop must do."""
        with self._lock:
            new = cause not in self.causes
            self.causes.add(cause)
            changed = not self.stopping or (cause.stops_running and not self.stop_running)
            if not self.stopping:
                self.reason = reason
            self.stopping = True
            self.stop_running = self.stop_running or cause.stops_running
        if changed and self._wake is not None:
            self._wake()
        return changed or new

    def __contains__(self, cause: Stop) -> bool:
        return cause in self.causes

    def __repr__(self) -> str:
        causes = ", ".join(sorted(c.value for c in self.causes)) or "none"
        return f"CancelToken(stopping={self.stopping}, causes={causes})"

class Interrupter:
    """Raises KeyboardInterrupt in one thread, from another: how ``Engine.cancel`` stops
    an attempt that runs in the loop's own thread. It lands at the thread's next Python
    line; C code it is in (a sleep, a socket read) finishes first."""

    def __init__(self, thread: threading.Thread | None) -> None:
        self._ident = None if thread is None else thread.ident

    def send(self) -> None:
        if self._ident is not None:
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._ident), ctypes.py_object(KeyboardInterrupt))

    def withdraw(self) -> None:
        """Drop an interrupt not delivered yet."""
        if self._ident is not None:
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._ident), None)


class _SignalMain(Interrupter):
    """Interrupts the main thread as Ctrl-C does: SIGINT (cuts a sleep short too)."""

    def send(self) -> None:
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGINT)

    def withdraw(self) -> None:
        """A SIGINT delivered after the run ends is the host's (as Ctrl-C then is)."""


SIGNAL_MAIN = _SignalMain(None)


def interrupter_for(thread: threading.Thread | None) -> Interrupter:
    """How to interrupt an attempt running in ``thread`` (None: nothing runs yet)."""
    if thread is None:
        return Interrupter(None)
    if thread is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        return SIGNAL_MAIN
    return Interrupter(thread)
