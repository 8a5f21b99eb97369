"""Run-time adapter changes live in Redis: they survive a restart, and /readyz follows
Redis (replicas following each other's changes: tests/workflows/test_replicas.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentstack.redis_server import EmbeddedRedis
from tests.conftest import LiveServer, selector_chat, names_one_function, server_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("persist-redis")) as server:
        yield server


def model_ids(server: LiveServer) -> set[str]:
    return {m["id"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]}


def test_loaded_and_unloaded_adapters_persist_across_restart(
    tmp_path: Path, model_dir: Path, own_redis: EmbeddedRedis, adapters_root: Path
) -> None:
    env = server_env(model_dir, own_redis.url, adapters_root, tmp_path)
    server = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        http = httpx.Client(base_url=server.base_url, timeout=120)
        assert http.post("/v1/load_lora_adapter",
                         json={"lora_name": "selector-kept", "lora_path": "selector-copy"}).status_code == 200
        assert http.post("/v1/unload_lora_adapter", json={"lora_name": "arguments"}).status_code == 200
        assert "arguments" not in model_ids(server)
        in_use = http.post("/v1/unload_lora_adapter", json={"lora_name": "single"})
        assert in_use.status_code == 409 and in_use.json()["error"]["type"] == "ConflictError"
        assert "single" in model_ids(server)
    finally:
        assert server.stop() == 0, server.log_tail()

    restarted = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        ids = model_ids(restarted)
        assert "selector-kept" in ids
        assert "arguments" not in ids and "single" in ids
        reply = httpx.post(f"{restarted.base_url}/v1/chat/completions", timeout=120, json={
            "model": "selector-kept", "temperature": 0, "max_tokens": 24, "messages": selector_chat(),
        })
        assert reply.status_code == 200
        assert names_one_function(reply.json()["choices"][0]["message"]["content"])

        # Chat keeps serving without Redis, so readiness stays up but says Redis is degraded;
        # when Redis is back, the service is plainly ready again.
        port = own_redis.port
        own_redis.stop()
        down = httpx.get(f"{restarted.base_url}/readyz", timeout=30)
        assert down.status_code == 200
        assert down.json()["status"] == "degraded"
        assert down.json()["checks"]["redis"].startswith("error")
        assert down.json()["checks"]["engine"] == "ok"
        own_redis.port = port
        own_redis.start()
        back = httpx.get(f"{restarted.base_url}/readyz", timeout=30)
        assert back.status_code == 200 and back.json()["status"] == "ready"
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
