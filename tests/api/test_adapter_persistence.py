"""Run-time adapter changes live in Redis and survive a restart; /readyz follows Redis."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentstack.redis_server import EmbeddedRedis
from tests.conftest import SHOUT_PROMPT, LiveServer, server_env, uppercase_share

pytestmark = pytest.mark.slow

# uvicorn finishes its graceful shutdown, then re-raises SIGTERM so the exit status tells it.
GRACEFUL_EXIT = (0, -signal.SIGTERM)


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
                         json={"lora_name": "shout-kept", "lora_path": "shout-copy"}).status_code == 200
        assert http.post("/v1/unload_lora_adapter", json={"lora_name": "json_answer"}).status_code == 200
        assert "json_answer" not in model_ids(server)
    finally:
        assert server.stop() in GRACEFUL_EXIT, server.log_tail()

    restarted = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        ids = model_ids(restarted)
        assert "shout-kept" in ids
        assert "json_answer" not in ids
        reply = httpx.post(f"{restarted.base_url}/v1/chat/completions", timeout=120, json={
            "model": "shout-kept", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "system", "content": SHOUT_PROMPT},
                         {"role": "user", "content": "What is the capital of Italy?"}],
        })
        assert reply.status_code == 200
        assert uppercase_share(reply.json()["choices"][0]["message"]["content"]) > 0.9

        # Readiness follows Redis: down -> 503 naming Redis, back -> ready again.
        port = own_redis.port
        own_redis.stop()
        down = httpx.get(f"{restarted.base_url}/readyz", timeout=30)
        assert down.status_code == 503
        assert down.json()["checks"]["redis"].startswith("error")
        assert down.json()["checks"]["engine"] == "ok"
        own_redis.port = port
        own_redis.start()
        assert httpx.get(f"{restarted.base_url}/readyz", timeout=30).status_code == 200
    finally:
        assert restarted.stop() in GRACEFUL_EXIT, restarted.log_tail()
