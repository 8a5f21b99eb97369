"""The store: roles reuse each other's prefix (shared modes only), tenants never do, Redis
keeps prefixes across restarts, and a Redis outage costs prefill, not requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest

from agentstack.redis_server import EmbeddedRedis
from cache.layout import BlockLayout, encode_block
from cache.modes import CacheConfig, CacheMode, RedisTierConfig
from cache.stats import register_cache_metrics
from cache.store import KVCacheStore
from cache.tiers import MemoryTier, RedisTier
from tests.cache.conftest import BLOCK, TINY, make_block, make_store, memory, redis_config

CONTEXT = list(range(1000, 1000 + 3 * BLOCK + 1))  # three full blocks and one more token


def save_context(store: KVCacheStore, writer: str | None, *, salt: str = "tenant") -> None:
    blocks = [make_block(store.mode, writer or "base", seed=i) for i in range(3)]
    assert store.save(CONTEXT, blocks, salt=salt, adapter=writer) == 3


@pytest.mark.parametrize("mode", [CacheMode.FULL_SHARED, CacheMode.DECOMPOSED])
def test_a_role_reuses_another_roles_prefix_in_shared_modes(mode: CacheMode) -> None:
    store = make_store(mode, [memory()])
    save_context(store, "json_answer")
    match = store.lookup(CONTEXT + [1, 2], salt="tenant", adapter="shout")
    assert match.num_tokens == 3 * BLOCK and match.tiers == ("memory",) * 3
    blocks = store.load(match, adapter="shout", num_query_tokens=len(CONTEXT) + 2)
    assert [b.writer for b in blocks] == ["json_answer"] * 3
    assert torch.equal(blocks[2].k, make_block(mode, "json_answer", seed=2).k)
    assert store.stats.hits(mode=mode.value) == 12
    assert store.stats.miss_tokens[mode.value] == 3
    assert store.stats.cross_role_reuses[mode.value] == 1


def test_non_shared_mode_keeps_roles_apart_like_vllm() -> None:
    store = make_store(CacheMode.NON_SHARED, [memory()])
    save_context(store, "json_answer")
    assert store.lookup(CONTEXT, salt="tenant", adapter="shout").num_tokens == 0
    assert store.lookup(CONTEXT, salt="tenant", adapter=None).num_tokens == 0
    own = store.lookup(CONTEXT, salt="tenant", adapter="json_answer")
    assert own.num_tokens == 3 * BLOCK
    store.load(own, adapter="json_answer", num_query_tokens=len(CONTEXT))
    assert store.stats.cross_role_reuses[CacheMode.NON_SHARED.value] == 0


def test_lookup_has_no_side_effects() -> None:
    store = make_store(CacheMode.DECOMPOSED, [memory()])
    save_context(store, "a")
    for _ in range(3):
        store.lookup(CONTEXT, salt="tenant", adapter="b")
    assert store.stats.hits() == 0 and not store.stats.miss_tokens


def test_no_hit_across_tenant_salts(redis_url: str) -> None:
    tiers = [memory(), RedisTier(redis_config(), url=redis_url)]
    store = make_store(CacheMode.DECOMPOSED, tiers)
    save_context(store, "a", salt="api-key-1")
    assert store.lookup(CONTEXT, salt="api-key-2", adapter="a").num_tokens == 0
    assert store.lookup(CONTEXT, salt="api-key-1", adapter="a").num_tokens == 3 * BLOCK
    store.close()


def test_a_second_process_finds_the_prefix_in_redis_and_promotes_it(redis_url: str) -> None:
    config = redis_config()
    first = make_store(CacheMode.DECOMPOSED, [memory(), RedisTier(config, url=redis_url)])
    save_context(first, "json_answer")
    first.close()

    second = make_store(CacheMode.DECOMPOSED, [memory(), RedisTier(config, url=redis_url)])
    match = second.lookup(CONTEXT, salt="tenant", adapter="shout")
    assert match.tiers == ("redis",) * 3
    blocks = second.load(match, adapter="shout", num_query_tokens=len(CONTEXT))
    assert len(blocks) == 3 and second.stats.hits(tier="redis") == 12
    assert second.lookup(CONTEXT, salt="tenant", adapter="shout").tiers == ("memory",) * 3
    second.close()


def test_prefixes_survive_a_redis_restart(tmp_path: Path) -> None:
    config = redis_config()
    with EmbeddedRedis(tmp_path) as server:
        store = make_store(CacheMode.FULL_SHARED, [memory(), RedisTier(config, url=server.url)])
        save_context(store, "a")
        store.close()
        port = server.port
    with EmbeddedRedis(tmp_path, port=port) as again:
        store = make_store(CacheMode.FULL_SHARED, [memory(), RedisTier(config, url=again.url)])
        match = store.lookup(CONTEXT, salt="tenant", adapter="b")
        assert match.tiers == ("redis",) * 3
        assert len(store.load(match, adapter="b", num_query_tokens=len(CONTEXT))) == 3
        store.close()


def test_redis_down_serves_from_memory_and_counts_the_fault(dead_redis_url: str) -> None:
    redis_tier = RedisTier(redis_config(retry_after_s=0), url=dead_redis_url)
    store = make_store(CacheMode.DECOMPOSED, [memory(), redis_tier])
    save_context(store, "a")  # written to memory; the Redis writes fail quietly
    match = store.lookup(CONTEXT, salt="tenant", adapter="b")
    assert match.tiers == ("memory",) * 3
    assert len(store.load(match, adapter="b", num_query_tokens=len(CONTEXT))) == 3
    assert store.lookup(list(range(50)), salt="tenant", adapter="b").num_tokens == 0
    assert redis_tier.stats.faults >= 2  # the one batched write, then the second lookup


def test_eviction_under_a_small_capacity_shortens_the_prefix() -> None:
    block_bytes = len(encode_block(make_block(CacheMode.DECOMPOSED, "a")))
    tier = MemoryTier(2 * block_bytes + 10)
    store = make_store(CacheMode.DECOMPOSED, [tier])
    save_context(store, "a")
    assert tier.stats.evictions == 1
    # Block 0 was evicted: blocks 1 and 2 are held but unusable without it.
    assert store.lookup(CONTEXT, salt="tenant", adapter="a").num_tokens == 0
    assert tier.bytes_held() == 2 * block_bytes


def test_a_block_evicted_between_lookup_and_load_ends_the_prefix() -> None:
    tier = memory()
    store = make_store(CacheMode.FULL_SHARED, [tier])
    save_context(store, "a")
    match = store.lookup(CONTEXT, salt="tenant", adapter="a")
    tier.remove(match.hashes[1])
    blocks = store.load(match, adapter="a", num_query_tokens=len(CONTEXT))
    assert len(blocks) == 1 and store.stats.hits() == BLOCK


def test_a_block_of_the_wrong_kind_is_refused() -> None:
    store = make_store(CacheMode.DECOMPOSED, [memory()])
    with pytest.raises(ValueError, match="KVBlock"):
        store.save(CONTEXT, [make_block(CacheMode.FULL_SHARED, "a")], salt="t", adapter="a")


def test_from_config_builds_memory_then_redis(redis_url: str) -> None:
    config = CacheConfig(mode=CacheMode.DECOMPOSED, block_size=BLOCK, redis=RedisTierConfig(prefix="cfg-test"))
    layout = BlockLayout(TINY, CacheMode.DECOMPOSED, rank=2)
    store = KVCacheStore.from_config(config, layout, model_id="tiny", redis_url=redis_url)
    assert [t.name for t in store.tiers] == ["memory", "redis"]
    store.close()
    with pytest.raises(ValueError, match="layout"):
        KVCacheStore.from_config(CacheConfig(mode=CacheMode.NON_SHARED), layout, model_id="tiny")


def test_metrics_are_exported_on_the_service_registry(redis_url: str) -> None:
    store = make_store(CacheMode.DECOMPOSED, [memory(), RedisTier(redis_config(), url=redis_url)])
    registry = CollectorRegistry()
    register_cache_metrics(registry, store.stats, store.tier_views())
    save_context(store, "json_answer")
    match = store.lookup(CONTEXT, salt="tenant", adapter="shout")
    store.load(match, adapter="shout", num_query_tokens=len(CONTEXT))
    text = generate_latest(registry).decode()
    assert 'agentstack:kv_cache_hit_tokens_total{mode="decomposed",tier="memory"} 12.0' in text
    assert 'agentstack:kv_cache_miss_tokens_total{mode="decomposed"} 1.0' in text
    assert 'agentstack:kv_cache_cross_role_reuses_total{mode="decomposed"} 1.0' in text
    assert 'agentstack:kv_cache_tier_faults_total{tier="redis"} 0.0' in text
    assert 'agentstack:kv_cache_evictions_total{tier="memory"} 0.0' in text
    held = [line for line in text.splitlines() if line.startswith('agentstack:kv_cache_bytes{tier="redis"}')]
    assert held and float(held[0].split()[-1]) > 0
    store.close()
