"""The FastAPI application: routes (each with its security dependencies), error bodies,
and the request limits in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    settings = service.settings
    app.state.admission = Admission(settings.max_concurrency_per_key, settings.max_queue_per_key)
    app.add_middleware(RequestLimits, metrics=service.metrics, max_body_bytes=settings.max_body_bytes,
                       timeout_s=settings.request_timeout_s)
    return app

