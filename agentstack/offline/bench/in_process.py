"""The service and its HTTP app in this process, on a loopback port: benchmarks reach the
same engine through HTTP and directly, and read its metrics registry without scraping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentstack.config import Settings
from agentstack.redis_server import free_port
from agentstack.service import Service


@asynccontextmanager
async def service_over_http(settings: Settings) -> AsyncIterator[tuple[Service, str]]:
    """Yield the started service and the base URL its app serves on; stop both after."""
    import uvicorn

    from agentstack.api.app import create_app

    service = Service(settings)
    await service.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, manage_lifecycle=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        yield service, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        await service.stop()
