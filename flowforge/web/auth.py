"""Who may talk to the dashboard: loopback by default, a token for anything else.

Bound to a loopback address the dashboard needs no token (one may still be set). Bound to
any other address it refuses to start without one (:func:`check_bind`), and then every
request, pages, static files, API and event streams alike, must carry it, as
``Authorization: Bearer TOKEN``, as the cookie set from a ``?token=TOKEN`` link, or as
``?token=TOKEN`` itself. Tokens are compared in constant time.

A request that passes on ``?token=`` is answered with the cookie (``HttpOnly``,
``SameSite=Strict``, so no script reads it and no other site's page sends it), and the
pages then drop the token from their address and links: after the first visit the token
lives in the cookie, not in URLs that end up in history, logs and ``Referer`` headers
(which :mod:`.guard` turns off as well). A browser's ``EventSource``, which cannot send
headers, is let in by the cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

__all__ = ["COOKIE", "PROBES", "TokenGate", "check_bind", "is_loopback", "is_probe"]

#: The token cookie's name; the server's port is added, so dashboards on one host but
#: different ports (cookies ignore ports) do not overwrite each other's.
COOKIE = "flowforge_token"

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
        if scope["type"] not in ("http", "websocket") or is_probe(scope):
            await self.app(scope, receive, send)
            return
        how = self._allowed(scope)
        if how == "query":
            await self.app(scope, receive, self._setting_cookie(scope, send))
            return
        if how:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        detail = (
            "this FlowForge dashboard needs its token: send 'Authorization: Bearer TOKEN' or "
            "open a page with ?token=TOKEN once (it sets a cookie); the token is the one "
            "given to flowforge ui with --token or FLOWFORGE_UI_TOKEN"
        )
        response = JSONResponse({"detail": detail}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="flowforge"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> str | None:
        """How the request carries the token (``header``, ``query``, ``cookie``), or None;
        a ``?token=`` counts before the cookie, so opening the link renews the cookie."""
        headers = scope.get("headers", ())
        for name, value in headers:
            if name == b"authorization":
                kind, _, given = value.partition(b" ")
                if kind.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token):
                    return "header"
        query = scope.get("query_string", b"")
        if b"token=" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
            for key, given_text in pairs:
                if key == "token" and hmac.compare_digest(given_text.encode("utf-8"), self._token):
                    return "query"
        wanted = cookie_name(scope)
        for name, value in headers:
            if name != b"cookie":
                continue
            for pair in value.decode("latin-1").split(";"):
                key, _, given_text = pair.strip().partition("=")
                if key == wanted and hmac.compare_digest(
                        unquote(given_text.strip('"')).encode("utf-8"), self._token):
                    return "cookie"
        return None

    def _setting_cookie(self, scope: Scope, send: Any) -> Any:
        """``send`` adding the token cookie to the response's headers."""
        value = quote(self._token.decode("utf-8"), safe="")  # no ; , or space in a cookie
        parts = [f"{cookie_name(scope)}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if scope.get("scheme") in ("https", "wss"):
            parts.append("Secure")
        header = (b"set-cookie", "; ".join(parts).encode("latin-1"))

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        return sending


def cookie_name(scope: Scope) -> str:
    """The token cookie's name for the server that took ``scope``."""
    server = scope.get("server") or (None, None)
    return COOKIE if server[1] is None else f"{COOKIE}_{server[1]}"


#: Liveness paths for load balancers and probes (``/api/v1/health`` says more).
PROBES = ("/health", "/ping")


def is_probe(scope: Any) -> bool:
    """A GET or HEAD of a liveness path, which reveals nothing and changes nothing."""
    return scope.get("path") in PROBES and scope.get("method") in ("GET", "HEAD")
