"""Which requests reach the dashboard at all: body size, Host, Origin and body type.

:class:`RequestGuard` is a pure ASGI middleware, the outermost layer of the app. Its rules,
in the order they are checked (the first one broken answers, in JSON, naming the rule
and the fix):

1. **Body size** (413): a ``Content-Length`` over ``max_body`` is refused at once; a body
   without one (chunked) is counted as it arrives and refused as soon as it passes the
   limit, so no more than ``max_body`` bytes are ever held in memory.
2. **Host** (400): the ``Host`` header must name a loopback name (``localhost``,
   127.0.0.0/8, ``::1``), the address the server was started on, or a host given with
   ``--allowed-host``. A DNS-rebinding page reaches the server under its own host name,
   so refusing foreign names keeps it from reading runs or posting to the API. Ports are
   checked only where an allowed host names one (``name:port``): a rebinding page uses the
   server's own port anyway, and a tunnel or proxy may forward from another.
3. **Origin** (403), on state-changing requests (POST, PUT, PATCH, DELETE): the
   ``Origin`` header (or, without it, the ``Referer``) must be the dashboard's own origin
   (``http://`` or ``https://`` + the Host it was reached at). Requests with neither header, such as
   ``curl`` or scripts, pass: browsers send ``Origin`` on every cross-site POST.
4. **Body type** (415), on state-changing requests with a body: only JSON (and YAML, for
   definitions) is taken. Forms and ``text/plain`` are what a cross-site page can send
   without a CORS preflight, so refusing them closes the last door.

Every response also says ``Referrer-Policy: no-referrer``, so a token in a page's URL
never travels to another site in a ``Referer`` header.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from .auth import is_loopback, is_probe

__all__ = ["DEFAULT_MAX_BODY", "RequestGuard", "check_max_body", "split_host"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The largest request body taken by default: 1 MiB.
DEFAULT_MAX_BODY = 1 << 20
#: Methods that change state: the Origin and body-type rules apply to them.
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Body types taken on state-changing requests.
BODY_TYPES = frozenset({"application/json", "application/yaml", "application/x-yaml",
                        "text/yaml"})


def check_max_body(max_body: int) -> int:
    """``max_body`` if it is a number of bytes, 1 or more; else a ValueError saying so."""
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        msg = f"max_body is a number of bytes (1 or more), got {max_body!r}"
        raise ValueError(msg)
    return max_body


def split_host(value: str) -> tuple[str, int | None]:
    """``("name", port)`` from a Host header value: ``a.b:80``, ``[::1]:80``, ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:  # a bare name, or a bare IPv6 address
        name, port_text = value, ""
    port = int(port_text) if port_text.isdigit() else None
    return name.rstrip("."), port


class RequestGuard:
    """ASGI middleware enforcing the four rules above. ``bound_host`` is the address the
    server was started on; ``allowed_hosts`` are further names (``name`` or
    ``name:port``) the Host header may carry; ``max_body`` is the largest body in bytes."""

    def __init__(
        self, app: ASGIApp, *, bound_host: str = "127.0.0.1",
        allowed_hosts: Iterable[str] = (), max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.max_body = check_max_body(max_body)
        self._bound = split_host(bound_host)[0]
        self._allowed = [split_host(h) for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self._host_problem(_headers(scope)):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        if is_probe(scope):  # says only "ok": any Host may ask (a probe uses the pod's IP)
            await self.app(scope, receive, _with_referrer_policy(send))
            return
        headers = _headers(scope)
        send = _with_referrer_policy(send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _refuse(send, 413, self._too_large(int(length)))
            return
        body, more = await self._read_body(receive)
        if body is None:
            await _refuse(send, 413, self._too_large(None))
            return
        problem = self._host_problem(headers) or self._request_problem(scope, headers, body)
        if problem is not None:
            await _refuse(send, *problem)
            return
        await self.app(scope, _replay(body, more, receive), send)

    # -- the rules ---------------------------------------------------------------------

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, list[Message]]:
        """The whole body, counted as it arrives: None once it passes ``max_body``. Also
        any message other than a body part (a disconnect), to hand on to the app."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts), [message]
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None, []
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), []

    def _too_large(self, length: int | None) -> str:
        size = "" if length is None else f" ({length} bytes)"
        return (f"the request body{size} is over this dashboard's limit of {self.max_body} "
                f"bytes; send less, or start `flowforge ui --max-body SIZE` with a larger "
                "limit")

    def _host_problem(self, headers: dict[str, str]) -> tuple[int, str] | None:
        given = headers.get("host")
        if not given:
            return 400, ("the request has no Host header; send one naming the dashboard's "
                         "address, like Host: 127.0.0.1:8765")
        name, port = split_host(given)
        if name in ("localhost", self._bound) or is_loopback(name):
            return None
        if any(name == n and (p is None or p == port) for n, p in self._allowed):
            return None
        return 400, (f"Host {given!r} is not this dashboard's address; start `flowforge ui "
                     f"--allowed-host {name}` to allow it")

    def _request_problem(
        self, scope: Scope, headers: dict[str, str], body: bytes
    ) -> tuple[int, str] | None:
        if scope.get("method", "GET") not in UNSAFE:
            return None
        host = headers["host"].strip().lower()
        origin, which = headers.get("origin"), "Origin"
        if origin is None and "referer" in headers:
            origin, which = headers["referer"], "Referer"
        if origin is not None and not _same_origin(origin, host):
            own = f"{scope.get('scheme', 'http')}://{host}"
            return 403, (f"{which} {origin!r} is not this dashboard's own origin ({own}): a "
                         f"{scope.get('method')} from another site is refused; send it from "
                         "the dashboard's pages, or from a script without an Origin header")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind and not body:
            return None
        if kind not in BODY_TYPES and not kind.endswith("+json"):
            shown = repr(kind) if kind else "no Content-Type"
            return 415, (f"a {scope.get('method')} body of {shown} is refused; send JSON with "
                         "Content-Type: application/json (YAML definitions: "
                         "application/yaml)")
        return None


def _same_origin(url: str, host: str) -> bool:
    """Whether ``url`` (an Origin or a Referer) is on ``host``, over http or https (a
    TLS proxy in front of the server serves the pages as https)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _replay(body: bytes, extra: list[Message], receive: Receive) -> Receive:
    """A ``receive`` giving the app the body read already, then the real channel."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False},
                              *extra]

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _with_referrer_policy(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            headers.append((b"referrer-policy", b"no-referrer"))
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
