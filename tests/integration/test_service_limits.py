"""Request size bounds of the service on a real uvicorn server on loopback (issue 18 #16).

A 32 MB header, a 100 KB URL and oversized bodies are refused (431, 414, 413), not answered 200, and
the server does not buffer the oversized head whole; ordinary requests still get 200.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from recsys.serving import bounded_http, limits
from recsys.serving.service import create_app
from recsys.storage.local import LocalStore


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request, tmp_path_factory):
    """The service (no model needed: /healthz answers) as `recsys serve` runs it."""
    options = bounded_http.server_options()
    if request.param == "h11":  # another server's parser: the app's own middleware still bounds the request
        options = {"http": "h11", "h11_max_incomplete_event_size": limits.MAX_HEAD_BYTES}
    app = create_app(LocalStore(tmp_path_factory.mktemp("store")), watch=False)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield request.param, port
    srv.should_exit = True
    thread.join(timeout=10)


def _exchange(port: int, head: bytes, body_chunks=(), timeout: float = 30.0, sent: list | None = None) -> int:
    """Send a raw request (from a thread, so a server that answers early is heard) and return the status;
    ``sent`` gets the number of bytes the server took before it closed the connection."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    total = [0]

    def send() -> None:
        try:
            for start in range(0, len(head), 1 << 16):
                conn.sendall(head[start:start + (1 << 16)])
                total[0] += len(head[start:start + (1 << 16)])
            for chunk in body_chunks:
                conn.sendall(chunk)
                total[0] += len(chunk)
        except OSError:
            pass  # the server refused and closed: that is the point

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n" not in received:
            data = conn.recv(65536)
            if not data:
                break
            received += data
    except OSError:
        pass
    finally:
        conn.close()
    sender.join(timeout=timeout)
    if sent is not None:
        sent.append(total[0])
    assert received.startswith(b"HTTP/1.1 "), received[:200]
    return int(received.split(b" ", 2)[1])


def test_an_ordinary_request_is_answered(server):
    _, port = server
    assert _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nUser-Agent: x\r\n\r\n") == 200


def test_a_32_mb_header_is_refused(server):
    protocol, port = server
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (32 << 20) + b"\r\n\r\n"
    sent: list[int] = []
    status = _exchange(port, head, sent=sent)
    # refused while the head arrives (httptools: 431; h11's own bound answers 400), never read whole
    assert status == (431 if protocol == "httptools" else 400)
    assert sent[0] < len(head) // 2


def test_a_header_block_past_the_limit_is_431(server):
    _, port = server
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"b" * 1000) for n in range(20))  # 20 KB in many lines
    assert _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n") == 431


def test_a_100_kb_url_is_refused(server):
    protocol, port = server
    status = _exchange(port, b"GET /recommendations/u1?k=1&pad=" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == (414 if protocol == "httptools" else 400)
    assert _exchange(port, b"GET /healthz?pad=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n") == 414


def test_an_oversized_body_is_413(server):
    _, port = server
    big = 10 << 20
    declared = b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % big
    assert _exchange(port, declared, [b"z" * (1 << 20)] * 10) == 413
    chunked = b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"z" * (1 << 16))
    assert _exchange(port, chunked, [chunk] * 4 + [b"0\r\n\r\n"]) == 413
    small = b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    assert _exchange(port, small) == 200
