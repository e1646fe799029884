"""What strangers get: a bearer token on every endpoint but ``/health``, and a body-size cap.

Both are plain ASGI middleware, so they run before any route reads the request.

* :class:`TokenGuard` — with a token, a request needs ``Authorization: Bearer <token>`` or
  the dashboard's session cookie (set by the login form, HttpOnly, SameSite=Strict; its value
  is an HMAC of the token, not the token). Comparisons are constant-time
  (:func:`hmac.compare_digest`). API calls without it get 401; pages redirect to the login
  form. The token is never logged or echoed.
* :class:`BodyLimit` — a declared ``Content-Length`` above the limit gets 413 before the body
  is read; a streamed body is counted and cut off at the limit.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "kq_session"
OPEN_PATHS = frozenset({"/health", "/login", "/logout"})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


class Token:
    """The server's token and the session cookie derived from it."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def __repr__(self) -> str:  # never show the token
        return f"Token(enabled={self.enabled})"

    def matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(candidate.encode(), self._token)

    def session(self) -> str:
        """The cookie value: an HMAC of the token (the token itself never leaves the form)."""
        assert self._token is not None
        return hmac.new(self._token, b"kronos-quant dashboard session", hashlib.sha256).hexdigest()

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and self.matches(value.strip()):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.session().encode()):
                return True
        return False


class TokenGuard:
    """401 (API) or a redirect to the login form (pages) without the token (module docs)."""

    def __init__(self, app: ASGIApp, *, token: Token) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or not self.token.enabled or path in OPEN_PATHS
                or self.token.allows(_headers(scope))):
            await self.app(scope, receive, send)
            return
        is_page = path == "/" or path == "/docs" or path.startswith("/loops/")
        if is_page and scope.get("method") == "GET":
            target = f"/login?next={quote(path)}".encode()
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", target), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, 401, {"detail": "missing or wrong bearer token "
                                              "(Authorization: Bearer <token>)"},
                        [(b"www-authenticate", b"Bearer")])


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for request bodies over ``max_bytes`` (module docs)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _refusal(self) -> dict[str, str]:
        return {"detail": f"request body exceeds this server's limit "
                          f"max_body_bytes={self.max_bytes}"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, self._refusal())
            return
        seen, started = 0, False

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, self._refusal())
