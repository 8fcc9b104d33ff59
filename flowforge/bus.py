"""The per-workflow event bus: subscribe by event type, publish in order.

A handler that raises is reported through the ``flowforge`` standard-library logger and
the run goes on; listeners can never break a run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .events import Event

__all__ = ["EventBus"]

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]

_log = logging.getLogger("flowforge")


class EventBus:
    """Routes each published event to the handlers of its class and of its bases."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = {}
        self._routes: dict[type[Event], tuple[Handler, ...]] = {}
        self._lock = threading.Lock()

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler(event)`` for every event of ``event_type`` (or a subclass).
        Returns a function that unsubscribes it."""
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            msg = (
                f"subscribe() needs an Event class such as TaskFailed, got {event_type!r}; "
                "import event types from flowforge.events"
            )
            raise TypeError(msg)
        if not callable(handler):
            msg = f"subscribe() needs a callable handler, got {handler!r}"
            raise TypeError(msg)
        with self._lock:
            self._handlers.setdefault(event_type, []).append(handler)
            self._routes.clear()

        def unsubscribe() -> None:
            with self._lock:
                handlers = self._handlers.get(event_type, [])
                if handler in handlers:
                    handlers.remove(handler)
                self._routes.clear()

        return unsubscribe

    def wants(self, event_type: type[Event]) -> bool:
        """True when publishing ``event_type`` would reach anyone (lets hot paths skip
        building events nobody listens to)."""
        return bool(self._route(event_type))

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to its handlers; a failing handler is logged and skipped."""
        for handler in self._route(type(event)):
            try:
                handler(event)
            except Exception:
                _log.exception(
                    "flowforge: event handler %r failed on %s; the run goes on",
                    handler,
                    type(event).__name__,
                )

    def _route(self, event_type: type[Event]) -> tuple[Handler, ...]:
        route = self._routes.get(event_type)
        if route is None:
            with self._lock:
                found: list[Handler] = []
                for klass in event_type.__mro__:
                    found.extend(self._handlers.get(klass, ()))
                route = tuple(found)
                self._routes[event_type] = route
        return route
