"""Request limits that hold for every request before routing: the body size (413) and,
for generation, the time a request may take (504); and the count of API requests by
role and status.

Pure ASGI, so streaming and client disconnects pass through untouched. The body is not
buffered: a declared `Content-Length` over the limit is refused at once, and a body that
grows past it while the route reads it ends the request with 413 (an HTTP error FastAPI
lets through its body parsing, answered by the app's error handler). Who may call what is
not decided here but by the routes' security dependencies (`agentstack.api.security`).
"""

from __future__ import annotations

import asyncio
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstack.api.errors import error_body
from agentstack.metrics import Metrics

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
RUN_SUFFIXES = ("/runs", "/runs/wait", "/runs/stream")


def is_generation(method: str, path: str) -> bool:
    """Requests that hold engine capacity: chat/completions and graph runs."""
    return method == "POST" and (path in GENERATION_PATHS or path.endswith(RUN_SUFFIXES))


REFUSAL_REASONS = {413: "too_large", 504: "timeout"}
"""The statuses these limits answer, as counted in `agentstack:requests_refused_total`."""


class _Refusal(Exception):
    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


class RequestLimits:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            self._check_declared_length(scope)
            limited = self._limited(receive)
            if is_generation(scope["method"], scope["path"]):
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await self.app(scope, limited, tracking_send)
                except TimeoutError:
                    raise _Refusal(504, "TimeoutError",
                                   f"request did not finish within {self.timeout_s:g} s") from None
            else:
                await self.app(scope, limited, tracking_send)
        except _Refusal as refusal:
            if "code" not in status:
                await _send_error(tracking_send, refusal)
        finally:
            # A 413 is answered here or, for a body that grows past the limit, by the app.
            if (reason := REFUSAL_REASONS.get(status.get("code", 0))) is not None:
                self.metrics.requests_refused.labels(reason).inc()
            self._count(scope, status)

    def _too_large(self) -> _Refusal:
        return _Refusal(413, "RequestEntityTooLarge", f"request body exceeds {self.max_body_bytes} bytes")

    def _check_declared_length(self, scope: Scope) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise self._too_large()

    def _limited(self, receive: Receive) -> Receive:
        size = 0

        async def receive_limited() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    raise HTTPException(413, f"request body exceeds {self.max_body_bytes} bytes")
            return message

        return receive_limited

    def _count(self, scope: Scope, status: dict[str, int]) -> None:
        if not scope["path"].startswith("/v1/"):
            return
        role = scope.get("state", {}).get("role", "none")
        self.metrics.requests.labels(role, str(status.get("code", 500))).inc()


async def _send_error(send: Send, refusal: _Refusal) -> None:
    payload = json.dumps(error_body(refusal.status, refusal.type, refusal.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
