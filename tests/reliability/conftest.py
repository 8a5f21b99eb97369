"""A real `agentstack serve` with API keys for two tenants and an admin, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstack.offline.bench.server import ServerProcess


def keyed_server(work_dir: Path, model_dir: Path, **env: str) -> ServerProcess:
    return ServerProcess(work_dir=work_dir, env={
        "AGENTSTACK_MODEL": str(model_dir),
        "AGENTSTACK_CACHE_DIR": str(work_dir / "cache"),
        "AGENTSTACK_DEFAULT_MAX_TOKENS": "8",
        "AGENTSTACK_MAX_TOKENS_CAP": "512",
        **env,
    })


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServerProcess]:
    server = keyed_server(tmp_path_factory.mktemp("keyed"), model_dir,
                          AGENTSTACK_MAX_CONCURRENCY_PER_KEY="4", AGENTSTACK_MAX_QUEUE_PER_KEY="4").start()
    yield server
    server.stop()
