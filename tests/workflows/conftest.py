"""A live server with the user graphs of `user_graphs/langgraph.json`, started once per
session (the restart test stops and starts it again, on the same port and Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstack.redis_server import EmbeddedRedis
from tests.conftest import LiveServer, server_env

USER_GRAPHS_FILE = Path(__file__).parent / "user_graphs" / "langgraph.json"


@pytest.fixture(scope="session")
def workflow_server(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, redis_server: EmbeddedRedis
) -> Iterator[LiveServer]:
    cache_dir = tmp_path_factory.mktemp("workflows")
    env = server_env(model_dir, redis_server.url, cache_dir / "adapters", cache_dir)
    env["AGENTSTACK_REDIS_PREFIX"] = "workflows"
    env["AGENTSTACK_GRAPHS_FILE"] = str(USER_GRAPHS_FILE)
    server = LiveServer(env=env, log_path=cache_dir / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def workflow_url(workflow_server: LiveServer) -> str:
    return workflow_server.base_url
