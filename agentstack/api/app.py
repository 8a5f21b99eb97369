"""The FastAPI application: routes (each with its security dependencies), error bodies,
and the request limits in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from agentstack.api import admin_routes, langgraph_routes, openai_routes
from agentstack.api.errors import ERROR_RESPONSES, install_error_handlers
from agentstack.api.limits import RequestLimits
from agentstack.api.security import Admission
from agentstack.auth import KeyRing, load_keyring
from agentstack.service import Service


def create_app(service: Service, *, manage_lifecycle: bool = True, keyring: KeyRing | None = None) -> FastAPI:
    """Build the app around a service; with `manage_lifecycle` the app starts and stops it.
    The keys come from the settings unless given (raises `AuthConfigError` when unusable)."""
    keyring = keyring if keyring is not None else load_keyring(service.settings)

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
    for router in (openai_routes.router, admin_routes.router, langgraph_routes.router):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.state.keyring = keyring
    app.openapi = _with_served_bounds(app, service)  # type: ignore[method-assign]
    settings = service.settings
    app.state.admission = Admission(settings.max_concurrency_per_key, settings.max_queue_per_key)
    app.add_middleware(RequestLimits, metrics=service.metrics, max_body_bytes=settings.max_body_bytes,
                       timeout_s=settings.request_timeout_s)
    return app



def _with_served_bounds(app: FastAPI, service: Service) -> Callable[[], dict[str, Any]]:
    """FastAPI's document, plus the bounds only the served model knows: `/detokenize`
    takes token ids below its vocabulary size (it answers 400 for others)."""
    document = app.openapi

    def openapi() -> dict[str, Any]:
        schema = document()
        engine = service.engine
        if engine is not None:
            tokens = schema.get("components", {}).get("schemas", {}).get("DetokenizeRequest", {})
            items = tokens.get("properties", {}).get("tokens", {}).get("items")
            if isinstance(items, dict):
                items.pop("exclusiveMaximum", None)
                items["maximum"] = len(engine.tokenizer) - 1
        return schema

    return openapi
