"""Who may talk to the dashboard: loopback by default, a token for anything else.

Bound to a loopback address the dashboard needs no token (one may still be set). Bound to
any other address it refuses to start without one (:func:`check_bind`), and then every
request, pages, static files, API and event streams alike, must carry it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (what the pages use for their own
requests, since a browser's ``EventSource`` cannot send headers). Tokens are compared in
constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["TokenGate", "check_bind", "is_loopback"]

Scope = dict[str, Any]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback ``host`` without a token."""
    if token is not None and not token.strip():
        msg = "the dashboard token is empty; pass a real secret with --token or FLOWFORGE_UI_TOKEN"
        raise ValueError(msg)
    if not is_loopback(host) and not token:
        msg = (
            f"refusing to serve the dashboard on {host}, which is not a loopback address, "
            "without a token: anyone who can reach it could start and cancel runs. Pass "
            "--token SECRET (or set FLOWFORGE_UI_TOKEN), or bind to 127.0.0.1"
        )
        raise ValueError(msg)


class TokenGate:
    """ASGI middleware: answers 401 to any request without the token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        detail = (
            "this FlowForge dashboard needs its token: send 'Authorization: Bearer TOKEN' or "
            "add ?token=TOKEN to the URL (the token given to flowforge ui with --token or "
            "FLOWFORGE_UI_TOKEN)"
        )
        response = JSONResponse({"detail": detail}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="flowforge"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                kind, _, given = value.partition(b" ")
                if kind.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token):
                    return True
        query = scope.get("query_string", b"")
        if b"token=" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
            for key, given_text in pairs:
                if key == "token" and hmac.compare_digest(given_text.encode("utf-8"), self._token):
                    return True
        return False
