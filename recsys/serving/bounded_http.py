"""uvicorn's httptools protocol with bounded request heads (see :mod:`recsys.serving.limits`).

uvicorn's httptools protocol buffers a request line and headers of any size before the app sees them
(a 32 MB header was read whole and answered 200). This one counts the head while it arrives and
refuses it as soon as it is past the bound: 414 for the URL, 431 for the whole head.
"""

from __future__ import annotations

import json
from typing import Any

import httptools  # noqa: F401 - the parser HttpToolsProtocol needs (pinned in constraints.txt)
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from recsys.serving.limits import MAX_HEAD_BYTES, MAX_URL_BYTES, REASONS


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses a URL past ``MAX_URL_BYTES`` (414) or a request head past ``MAX_HEAD_BYTES`` (431) while
    it arrives, so neither is buffered whole; everything else is uvicorn's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received since the current request head began
        self._in_head = True
        self._refusal: int | None = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # parser errors, ours included, end in send_400_response
        if self._in_head and self._refusal is None and self._head_bytes > MAX_HEAD_BYTES:
            self._refusal = 431
            self.send_400_response("")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refusal = 414
            raise ValueError(REASONS[414])  # stops the parser; httptools re-raises it as a parser error

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        body = json.dumps({"detail": REASONS[self._refusal]}).encode()
        self.transport.write(b"".join([
            STATUS_LINE[self._refusal], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body,
        ]))
        self.transport.close()


def server_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that bound the request head while the server reads it."""
    return {"http": BoundedHttpToolsProtocol}
