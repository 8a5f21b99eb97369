"""The service with `cache.mode = decomposed`: the same OpenAI API, and a role reading a
context another role already read skips its prefill, reading the engine's blocks (the
usage and metrics say so)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from agentstack.redis_server import EmbeddedRedis
from cache.connector import STATS_INTERVAL_S
from tests.conftest import LiveServer, selector_chat, server_env

pytestmark = pytest.mark.slow


def test_a_role_reuses_the_context_another_role_read(
    tmp_path: Path, model_dir: Path, redis_server: EmbeddedRedis, adapters_root: Path
) -> None:
    env = server_env(model_dir, redis_server.url, adapters_root, tmp_path / "cache")
    env["AGENTSTACK_CACHE"] = json.dumps({"mode": "decomposed"})
    env["AGENTSTACK_REDIS_PREFIX"] = "shared-cache-test"
    server = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
        messages = selector_chat()
        first = client.chat.completions.create(model="selector", messages=messages, max_tokens=8)  # type: ignore[arg-type]
        second = client.chat.completions.create(model="single", messages=messages, max_tokens=8)  # type: ignore[arg-type]
        assert first.choices[0].message.content and second.choices[0].message.content
        assert first.usage and second.usage and second.usage.prompt_tokens_details
        assert second.usage.prompt_tokens == first.usage.prompt_tokens
        whole_blocks = (first.usage.prompt_tokens - 1) // 32 * 32
        assert whole_blocks >= 64
        assert second.usage.prompt_tokens_details.cached_tokens == whole_blocks

        # The engine reports the cache's counters at most once per interval, with a step.
        time.sleep(STATS_INTERVAL_S + 0.5)
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        # The reader's hit is the engine's own prefix cache (one copy for both roles).
        assert f'agentstack:prefix_cache_hits_total{{role="single"}} {float(whole_blocks)}' in metrics
    finally:
        assert server.stop() == 0, server.log_tail()
