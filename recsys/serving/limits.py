"""Bounds on what one request may make the service read: URL, header block and body sizes.

Two layers, so that no request is answered 200 past a limit and none is buffered without bound:

- :class:`RequestLimits`, ASGI middleware of the app (any server, and in-process tests): a URL longer
  than ``MAX_URL_BYTES`` is answered 414, a header block larger than ``MAX_HEADER_BYTES`` 431, a body
  larger than ``MAX_BODY_BYTES`` 413 (no endpoint takes a body; one is read up to the limit and refused).
- :func:`recsys.serving.bounded_http.server_options` for ``uvicorn.run``: uvicorn's httptools protocol,
  which otherwise buffers a request head of any size (a 32 MB header was answered 200), refusing the head
  while it arrives (:class:`recsys.serving.bounded_http.BoundedHttpToolsProtocol`).

Answers are ``{"detail": "..."}`` with ``connection: close``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_URL_BYTES = 8 * 1024  # path and query string, as sent (percent-encoded)
MAX_HEADER_BYTES = 16 * 1024  # names and values of all header lines
MAX_BODY_BYTES = 64 * 1024
# the server refuses a request head (request line + headers) past this while reading it; smaller
# excesses reach the middleware, which answers with the precise status
MAX_HEAD_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

REASONS = {
    413: f"the request body is larger than {MAX_BODY_BYTES} bytes (no endpoint takes a body)",
    414: f"the URL (path and query) is longer than {MAX_URL_BYTES} bytes",
    431: f"the request headers are larger than {MAX_HEADER_BYTES} bytes",
}


async def _refuse(send: Send, status: int) -> None:
    body = json.dumps({"detail": REASONS[status]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: 414, 431 or 413 for a request past :data:`MAX_URL_BYTES`, :data:`MAX_HEADER_BYTES`
    or :data:`MAX_BODY_BYTES`, before the app sees it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = refusal(scope)
        if status is not None:
            await _refuse(send, status)
            return
        headers = dict(scope.get("headers") or [])
        if b"transfer-encoding" not in headers and int(headers.get(b"content-length", b"0")) == 0:
            await self.app(scope, receive, send)
            return
        # a body: read it up to the limit, then replay it to the app
        messages: list[MutableMapping[str, Any]] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                await _refuse(send, 413)
                return
            messages.append(message)
            more = message.get("more_body", False)

        async def replay() -> MutableMapping[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def refusal(scope: Scope) -> int | None:
    """414, 431 or 413 if the request's URL, headers or declared body length are past the limits."""
    query = scope.get("query_string") or b""
    url = len(scope.get("raw_path") or scope["path"].encode()) + (len(query) + 1 if query else 0)
    if url > MAX_URL_BYTES:
        return 414
    headers = scope.get("headers") or []
    if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
        return 431
    length = dict(headers).get(b"content-length", b"0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return 413
    return None
