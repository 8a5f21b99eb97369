"""The request guard: every HTTP request passes it before any route.

It is pure ASGI (so streaming and client disconnects pass through untouched) and does,
in order: authentication (401), the body-size limit (413), the key's permission for the
role it names or the admin routes (403), admission to generation under the key's
concurrency limit and bounded queue (429 + Retry-After), and the request timeout (504).
It counts every API request by role and status. A refused request never reaches a
route, so a streaming response can never turn into an error after its 200 went out.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstack.api.errors import error_body
from agentstack.auth import ANONYMOUS, KeyRing, Principal, current_principal
from agentstack.service import Service

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ok", "/openapi.json", "/docs",
                          "/docs/oauth2-redirect", "/redoc"})
ROLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
ADMIN_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
RUN_SUFFIXES = ("/runs", "/runs/wait", "/runs/stream")


def is_generation(method: str, path: str) -> bool:
    """Requests that hold engine capacity: chat/completions and graph runs."""
    return method == "POST" and (path in ROLE_PATHS or path.endswith(RUN_SUFFIXES))


class Refused(Exception):
    """A request the guard answers itself, with an OpenAI error body."""

    def __init__(self, status: int, type_: str, message: str, *, reason: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.reason = status, type_, message, reason
        self.headers = headers or {}


@dataclass
class _Lane:
    """One key's share of the engine: a slot semaphore, its queue length and a duration estimate."""

    slots: asyncio.Semaphore
    waiting: int = 0
    mean_duration_s: float = 1.0


@dataclass
class Admission:
    """Per-key concurrency with a bounded queue. A full queue answers 429 at once, with a
    Retry-After from the key's recent request durations, rather than piling up work the
    engine cannot reach before the client's own timeout."""

    max_concurrency: int
    max_queue: int
    _lanes: dict[str, _Lane] = field(default_factory=dict)

    def _lane(self, key: str) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(asyncio.Semaphore(self.max_concurrency))
        return lane

    def retry_after_s(self, key: str) -> int:
        lane = self._lane(key)
        rounds = (lane.waiting + 1) / self.max_concurrency
        return max(1, math.ceil(lane.mean_duration_s * rounds))

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        lane = self._lane(key)
        if lane.slots.locked() and lane.waiting >= self.max_queue:
            raise Refused(429, "RateLimitError",
                          f"too many concurrent requests for this API key (limit {self.max_concurrency}, "
                          f"queue {self.max_queue}); retry later",
                          reason="overloaded", headers={"Retry-After": str(self.retry_after_s(key))})
        lane.waiting += 1
        try:
            await lane.slots.acquire()
        finally:
            lane.waiting -= 1
        started = time.monotonic()
        try:
            yield
        finally:
            lane.slots.release()
            lane.mean_duration_s = 0.8 * lane.mean_duration_s + 0.2 * (time.monotonic() - started)

    def waiting(self) -> int:
        return sum(lane.waiting for lane in self._lanes.values())


class RequestGuard:
    def __init__(self, app: ASGIApp, *, service: Service, keyring: KeyRing) -> None:
        self.app = app
        self.service = service
        self.keyring = keyring
        settings = service.settings
        self.max_body_bytes = settings.max_body_bytes
        self.timeout_s = settings.request_timeout_s
        self.admission = Admission(settings.max_concurrency_per_key, settings.max_queue_per_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        method, path = scope["method"], scope["path"]
        token = None
        try:
            if path in PUBLIC_PATHS:
                await self.app(scope, receive, tracking_send)
                return
            principal = self._authenticate(scope)
            token = current_principal.set(principal)
            if method in ("POST", "PUT", "PATCH"):
                body = await self._read_bounded(receive)
                self._authorize(principal, path, body)
                receive = _replay(body, receive)
            elif path in ADMIN_PATHS:
                self._authorize(principal, path, b"")
            if is_generation(method, path):
                await self._generate(principal, scope, receive, tracking_send, status)
            else:
                await self.app(scope, receive, tracking_send)
        except Refused as refusal:
            self.service.metrics.requests_refused.labels(refusal.reason).inc()
            if "code" not in status:
                await _send_error(tracking_send, refusal)
        finally:
            if token is not None:
                current_principal.reset(token)
            self._count(scope, status)

    async def _generate(self, principal: Principal, scope: Scope, receive: Receive, send: Send,
                        status: dict[str, int]) -> None:
        if self.service.draining:
            raise Refused(503, "ServiceUnavailableError", "the server is shutting down; retry on another replica",
                          reason="draining", headers={"Retry-After": "1"})
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.admission.slot(principal.name):
                    await self.app(scope, receive, send)
        except TimeoutError:
            raise Refused(504, "TimeoutError", f"request did not finish within {self.timeout_s:g} s",
                          reason="timeout") from None

    def _authenticate(self, scope: Scope) -> Principal:
        if not self.keyring.enabled:
            return ANONYMOUS
        headers = dict(scope["headers"])
        key = None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            key = credentials.strip()
        elif headers.get(b"x-api-key"):
            key = headers[b"x-api-key"].decode("latin-1").strip()
        if not key:
            raise Refused(401, "AuthenticationError",
                          "Missing API key: send it as `Authorization: Bearer <key>` (or `x-api-key`).",
                          reason="missing_key", headers={"WWW-Authenticate": "Bearer"})
        principal = self.keyring.authenticate(key)
        if principal is None:
            raise Refused(401, "AuthenticationError", "Incorrect API key provided.",
                          reason="wrong_key", headers={"WWW-Authenticate": "Bearer"})
        return principal

    def _authorize(self, principal: Principal, path: str, body: bytes) -> None:
        if path in ADMIN_PATHS and not principal.admin:
            raise Refused(403, "PermissionDeniedError", "this API key may not load or unload adapters",
                          reason="forbidden")
        if path in ROLE_PATHS:
            model = _json_field(body, "model")
            if isinstance(model, str) and not principal.may_use_role(model):
                raise Refused(403, "PermissionDeniedError", f"this API key may not use the model `{model}`",
                              reason="forbidden")

    async def _read_bounded(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Refused(413, "RequestEntityTooLarge", f"request body exceeds {self.max_body_bytes} bytes",
                              reason="too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _count(self, scope: Scope, status: dict[str, int]) -> None:
        if not scope["path"].startswith("/v1/"):
            return
        role = scope.get("state", {}).get("role", "none")
        self.service.metrics.requests.labels(role, str(status.get("code", 500))).inc()


def _json_field(body: bytes, name: str) -> Any:
    """A top-level field of a JSON object body, or None; malformed bodies are the route's to refuse."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document.get(name) if isinstance(document, dict) else None


async def _send_error(send: Send, refusal: Refused) -> None:
    payload = json.dumps(error_body(refusal.status, refusal.type, refusal.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, upstream: Receive) -> Receive:
    """Hand the buffered body to the app once, then pass through (to see disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive
