"""The FastAPI application: routes, error bodies, body-size limit and request counting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstack.api import admin_routes, langgraph_routes, openai_routes
from agentstack.api.errors import error_body, install_error_handlers
from agentstack.metrics import Metrics
from agentstack.service import Service


class RequestGuard:
    """Pure ASGI middleware (so streaming and client disconnects pass through untouched).

    Refuses bodies over the limit with 413 before any handler parses them, and counts
    every API request by role and status for `agentstack:requests_total`.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_bounded(receive)
            if body is None:
                await self._reject_too_large(counting_send)
                self._count(scope, status)
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self._count(scope, status)

    async def _read_bounded(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reject_too_large(self, send: Send) -> None:
        payload = json.dumps(
            error_body(413, "RequestEntityTooLarge",
                       f"request body exceeds {self.max_body_bytes} bytes")
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def _count(self, scope: Scope, status: dict[str, int]) -> None:
        if not scope["path"].startswith("/v1/"):
            return
        role = scope.get("state", {}).get("role", "none")
        self.metrics.requests.labels(role, str(status.get("code", 500))).inc()


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


def create_app(service: Service, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the app around a service; with `manage_lifecycle` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = FastAPI(title="agentstack", version="0.1.0", lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(langgraph_routes.router)
    app.add_middleware(RequestGuard, max_body_bytes=service.settings.max_body_bytes,
                       metrics=service.metrics)
    return app

