"""The served full-shared mode on the real vLLM CPU engine: a role reuses the prefix another
role computed from the engine's own blocks (one physical copy for both), a second engine
process finds it in Redis, and with Redis down every request still succeeds.

Each engine runs in its own process through `agentstack bench cache-served`, the same
path `agentstack bench cache` measures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentstack.offline.bench.cache import SERVED_COMMAND
from agentstack.redis_server import EmbeddedRedis
from tests.cache.conftest import shipped_family

pytestmark = pytest.mark.slow


def serve(mode: str, redis_url: str, out: Path) -> dict[str, Any]:
    roles = ",".join(p.name for p in shipped_family()[:2])
    subprocess.run(
        [*SERVED_COMMAND, mode, redis_url, str(out), "--probe", roles],
        check=True, timeout=600,
    )
    return json.loads(out.read_text())


def test_full_shared_reuses_across_roles_and_engine_processes(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        first = serve("full-shared", server.url, tmp_path / "first.json")
        writer, reader = first["rows"]
        assert writer["cached_tokens"] == 0
        assert reader["cached_tokens"] >= 128, "the reader should load the writer's context blocks"
        assert first["engine_blocks"] <= context_blocks(first) + 2, "one engine copy for both roles"
        second = serve("full-shared", server.url, tmp_path / "second.json")
        assert second["rows"][0]["cached_tokens"] >= 128, "a new engine process should find the prefix in Redis"
        assert second["cache_stats"]["worker"]["hit_tokens"]["redis|full-shared"] >= 128


def context_blocks(served: dict[str, Any]) -> int:
    """The engine's full blocks of the writer's prompt (the shared context and its question)."""
    return served["rows"][0]["prompt_tokens"] // served["engine_block_size"]


def test_non_shared_is_vllm_alone(tmp_path: Path, redis_url: str) -> None:
    served = serve("non-shared", redis_url, tmp_path / "rows.json")
    assert [r["cached_tokens"] for r in served["rows"]] == [0, 0]
    assert served["cache_stats"] == {}
    assert context_blocks(served) >= 1
    assert served["engine_blocks"] >= 2 * context_blocks(served), "each role keeps its own copy"


def test_redis_down_fails_no_request(tmp_path: Path, dead_redis_url: str) -> None:
    served = serve("full-shared", dead_redis_url, tmp_path / "rows.json")
    rows = served["rows"]
    assert len(rows) == 2 and all(r["prompt_tokens"] > r["cached_tokens"] for r in rows)
    assert rows[1]["cached_tokens"] >= 128, "the memory tier still serves the reader"
    assert sum(side["faults"]["redis"] for side in served["cache_stats"].values()) >= 1


def test_a_reader_on_another_engine_waits_for_the_writers_prefill(tmp_path: Path) -> None:
    """Two engines on one Redis: the reader's request arrives while the writer still
    computes the shared context; it waits for the writer's blocks instead of computing them."""
    writer_role, reader_role = (p.name for p in shipped_family()[:2])
    out = {name: tmp_path / f"{name}.json" for name in ("writer", "reader")}
    ready = {name: tmp_path / f"{name}.ready" for name in ("writer", "reader")}
    with EmbeddedRedis(tmp_path / "redis") as server:
        common = [*SERVED_COMMAND, "full-shared", server.url]
        writer = subprocess.Popen([*common, str(out["writer"]), "--probe", writer_role, "--context-repeats", "6",
                                   "--ready-file", str(ready["writer"]), "--wait-file", str(ready["reader"])])
        reader = subprocess.Popen([*common, str(out["reader"]), "--probe", reader_role, "--context-repeats", "6",
                                   "--ready-file", str(ready["reader"]), "--after-peer-claim"])
        assert writer.wait(timeout=900) == 0 and reader.wait(timeout=900) == 0
    written = json.loads(out["writer"].read_text())["rows"][0]
    served = json.loads(out["reader"].read_text())
    read = served["rows"][0]
    assert written["cached_tokens"] == 0
    assert read["prompt_tokens"] == written["prompt_tokens"] > 1024
    assert served["cache_stats"]["scheduler"]["peer_waits"]["full-shared"] == 1
    # All but the last block come from the writer: vLLM computes the last prompt token.
    block = served["engine_block_size"]
    assert read["cached_tokens"] >= (read["prompt_tokens"] - 1) // block * block
    assert served["cache_stats"]["worker"]["hit_tokens"]["redis|full-shared"] == read["cached_tokens"]
