"""The HTTP server `agentstack serve` runs closes connections that hold a socket without
sending a request: half a head (slowloris), or an idle keep-alive; complete requests,
slow ones included, are served. A real uvicorn on loopback, with a trivial app (no engine)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.types import Receive, Scope, Send

from agentstack.api.server import DrainingServer, build_server
from agentstack.config import Settings

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HALF_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
SLACK_S = 2.0
"""How much later than its timeout the server may close: a loaded 2-core machine is slow."""


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@contextmanager
def running(header_timeout_s: float, keepalive_timeout_s: float) -> Iterator[tuple[str, int]]:
    """The server of `build_server` in a thread, on a free loopback port."""
    drained: list[bool] = []
    settings = Settings(host="127.0.0.1", port=0, header_timeout_s=header_timeout_s,
                        keepalive_timeout_s=keepalive_timeout_s, shutdown_grace_s=1)
    server: DrainingServer = build_server(hello, settings, on_drain=lambda: drained.append(True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield host, port
    finally:
        server.should_exit = True
        thread.join(10)


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One response of the `hello` app (a 5-byte body)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"hello"):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    return data


def read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; fails if the
    connection is still open after `within_s`."""
    start = time.monotonic()
    sock.settimeout(within_s)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        pytest.fail(f"server kept the connection open for {within_s} s (got {data!r})")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


@pytest.mark.parametrize("sent", [HALF_HEAD, b""], ids=["half a head", "nothing"])
def test_a_connection_without_a_whole_head_is_closed(sent: bytes) -> None:
    with running(header_timeout_s=1.0, keepalive_timeout_s=30.0) as address:
        sock = connect(address)
        sock.sendall(sent)
        data, took = read_until_closed(sock, 1.0 + SLACK_S)
    if sent:  # a client that started a request is told why
        assert data.startswith(b"HTTP/1.1 408 ")
    else:
        assert data == b""
    assert took > 0.5


def test_trickling_the_head_does_not_extend_the_deadline() -> None:
    with running(header_timeout_s=1.0, keepalive_timeout_s=30.0) as address:
        sock = connect(address)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for i in range(int((1.0 + SLACK_S) / 0.2)):  # a header line every 0.2 s
            time.sleep(0.2)
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    assert closed, "the server kept reading a head that never ends"


def test_the_deadline_applies_again_to_the_next_request_on_a_kept_alive_connection() -> None:
    with running(header_timeout_s=1.0, keepalive_timeout_s=30.0) as address:
        sock = connect(address)
        sock.sendall(REQUEST)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(HALF_HEAD)
        data, _ = read_until_closed(sock, 1.0 + SLACK_S)
    assert data.startswith(b"HTTP/1.1 408 ")


def test_requests_are_served_and_an_idle_kept_alive_connection_is_closed() -> None:
    with running(header_timeout_s=30.0, keepalive_timeout_s=1.0) as address:
        sock = connect(address)
        for _ in range(2):  # the same connection serves a second request: it is kept alive
            sock.sendall(REQUEST)
            response = read_response(sock)
            assert response.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in response.lower()
        data, took = read_until_closed(sock, 1.0 + SLACK_S)
    assert data == b""
    assert took > 0.5


def test_a_slow_client_that_completes_its_head_in_time_is_served() -> None:
    with running(header_timeout_s=2.0, keepalive_timeout_s=30.0) as address:
        sock = connect(address)
        for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.25)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
