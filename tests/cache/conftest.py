"""Builders for cache tests: small model shapes, random blocks, stores over real tiers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from agentstack.config import PACKAGE_DATA
from agentstack.redis_server import EmbeddedRedis
from cache.adapters import group_by_shared_a
from cache.index import PrefixHasher
from cache.layout import BlockLayout, DecomposedBlock, KVBlock, ModelShape
from cache.modes import CacheMode, RedisTierConfig
from cache.store import KVCacheStore, cache_namespace
from cache.tiers import CacheTier, MemoryTier, RedisTier

TINY = ModelShape(num_layers=2, num_kv_heads=1, head_dim=4, hidden_size=8)
BLOCK = 4
RANK = 2
_prefixes = itertools.count()


def make_block(mode: CacheMode, writer: str, *, seed: int = 0, shape: ModelShape = TINY) -> KVBlock | DecomposedBlock:
    """A block of BLOCK tokens with random bf16 content."""
    g = torch.Generator().manual_seed(seed)
    dims = (shape.num_layers, BLOCK, shape.num_kv_heads, shape.head_dim)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g).to(shape.dtype)

    if mode.stores_low_rank:
        return DecomposedBlock(k=rand(*dims), v_base=rand(*dims), xa=rand(shape.num_layers, BLOCK, RANK), writer=writer)
    return KVBlock(k=rand(*dims), v=rand(*dims), writer=writer)


def make_store(mode: CacheMode, tiers: list[CacheTier]) -> KVCacheStore:
    layout = BlockLayout(TINY, mode, rank=RANK if mode.stores_low_rank else 0)
    return KVCacheStore(layout, PrefixHasher(BLOCK, cache_namespace("tiny", layout, BLOCK)), tiers)


def redis_config(**overrides: object) -> RedisTierConfig:
    """A config with a prefix no other test uses, so tests on one server never interfere."""
    return RedisTierConfig(prefix=f"test-kv-{next(_prefixes)}", **overrides)  # type: ignore[arg-type]


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def redis_tier(redis_url: str) -> Iterator[RedisTier]:
    tier = RedisTier(redis_config(capacity_bytes=1 << 20), url=redis_url)
    yield tier
    tier.close()


@pytest.fixture
def dead_redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a real Redis that has been stopped: connections are refused."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("dead-redis")).start()
    url = server.url
    server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
    return url


def memory(capacity: int = 1 << 20) -> MemoryTier:
    return MemoryTier(capacity)


def shipped_family() -> list[Path]:
    """The largest set of shipped adapters sharing one v_proj lora_A (at most three).

    Tests take whatever the package ships, so retrained or renamed adapters still count.
    """
    shipped = [p for p in (PACKAGE_DATA / "adapters").iterdir() if (p / "adapter_config.json").is_file()]
    return group_by_shared_a(shipped)[0][:3]
