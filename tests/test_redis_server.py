"""The embedded Redis is a real Redis 8 with JSON and Search, and keeps data across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from agentstack.redis_server import EmbeddedRedis, EmbeddedRedisError


def test_embedded_redis_has_json_and_search_and_persists(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        assert int(client.info("server")["redis_version"].split(".")[0]) >= 8
        modules = {m[b"name"].decode().lower() for m in client.execute_command("MODULE", "LIST")}
        assert {"rejson", "search"} <= modules
        client.execute_command("JSON.SET", "doc", "$", '{"a": 1}')
        client.close()
    assert not server.running

    with EmbeddedRedis(tmp_path) as again:
        client = redis.Redis.from_url(again.url)
        assert client.execute_command("JSON.GET", "doc", "$.a") == b"[1]"
        client.close()


def test_embedded_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        assert server.url.startswith("redis://127.0.0.1:")


def test_one_embedded_redis_per_data_directory(tmp_path: Path) -> None:
    """A second server on the same data would be a second writer of its append-only file."""
    with EmbeddedRedis(tmp_path):
        with pytest.raises(EmbeddedRedisError, match="AGENTSTACK_REDIS_URL"):
            EmbeddedRedis(tmp_path).start()
    with EmbeddedRedis(tmp_path) as again:
        assert redis.Redis.from_url(again.url).ping()
