"""The HTTP server: uvicorn with a deadline for request heads, a keep-alive timeout and a
drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import FrameType
from typing import ClassVar

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from agentstack.config import Settings

HEAD_TIMEOUT_BODY = b"No complete request head arrived in time.\n"


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head.

    uvicorn closes a kept-alive connection that stays idle, but stops that timer at the
    first byte, and has none for a new connection: a client that sends half a head and
    then waits (slowloris) holds a socket and a file descriptor for as long as it likes.
    The deadline runs while h11 waits for a request head, from the connection's start or
    the end of the previous response; trickling bytes does not extend it, a complete head
    stops it. At expiry a client that sent part of a head gets a 408; the connection is
    closed either way.
    """

    head_timeout_s: ClassVar[float] = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def handle_events(self) -> None:
        """Every parsed event and every new request cycle passes through here."""
        super().handle_events()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Runs the deadline while the client's side is IDLE (no head yet), else stops it;
        an already running deadline is kept, so each byte does not restart it."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0] and self.conn.our_state is h11.IDLE:
            # h11 lets a server answer before any request; only a client mid-head gets
            # one, since an idle kept-alive client could take it for its next request's.
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
            for event in (h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                          h11.Data(data=HEAD_TIMEOUT_BODY), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def head_timeout_protocol(timeout_s: float) -> type[HeadTimeoutH11Protocol]:
    """uvicorn builds one protocol per connection from a class: this one carries the deadline."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": timeout_s})


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, call `on_drain` first (the service fails readiness and refuses
    new generation at once), then let uvicorn finish the requests in flight, up to the
    grace period, before the lifespan stops the engine."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_drain = on_drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_drain()
        super().handle_exit(sig, frame)


def build_server(app: ASGIApp, settings: Settings, on_drain: Callable[[], None]) -> DrainingServer:
    """The server `agentstack serve` runs, with the connection timeouts of `settings`."""
    # uvicorn annotates timeout_keep_alive as int but only hands it to loop.call_later.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            http=head_timeout_protocol(settings.header_timeout_s),
                            timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    return DrainingServer(config, on_drain)
