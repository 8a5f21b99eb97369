"""Counters cross from the engine process to the API process's /metrics unchanged."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cache.modes import CacheMode
from cache.stats import MirroredCache, register_cache_metrics, stats_payload
from tests.cache.conftest import BLOCK, make_block, make_store, memory

CONTEXT = list(range(2 * BLOCK))


def series(registry: CollectorRegistry) -> set[str]:
    return {line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")}


def test_mirrored_counters_export_the_same_series() -> None:
    tier = memory(capacity=10_000)
    store = make_store(CacheMode.FULL_SHARED, [tier])
    store.save(CONTEXT, [make_block(CacheMode.FULL_SHARED, "a", seed=i) for i in range(2)], salt="t", adapter="a")
    store.load(store.lookup(CONTEXT, salt="t", adapter="b"), adapter="b", num_query_tokens=len(CONTEXT) + 3)
    engine_side = CollectorRegistry()
    register_cache_metrics(engine_side, store.stats, store.tier_views())

    mirror = MirroredCache()
    api_side = CollectorRegistry()
    register_cache_metrics(api_side, mirror.stats, mirror.tiers)
    mirror.update({"worker": stats_payload(store.stats, store.tier_views())})
    assert series(api_side) == series(engine_side)
    assert 'agentstack:kv_cache_hit_tokens_total{mode="full-shared",tier="memory"} 8.0' in series(api_side)


def test_sides_add_up_and_a_newer_payload_replaces_its_side() -> None:
    def payload(hits: int, faults: int, held: int) -> dict[str, object]:
        return {
            "hit_tokens": {"redis|full-shared": hits}, "miss_tokens": {}, "cross_role_reuses": {},
            "evictions": {"redis": 0}, "faults": {"redis": faults}, "bytes": {"redis": held},
        }

    mirror = MirroredCache()
    registry = CollectorRegistry()
    register_cache_metrics(registry, mirror.stats, mirror.tiers)
    mirror.update({"worker": payload(128, 1, 500)})
    mirror.update({"scheduler": payload(0, 2, 400)})
    mirror.update({"worker": payload(256, 1, 600)})
    lines = series(registry)
    assert 'agentstack:kv_cache_hit_tokens_total{mode="full-shared",tier="redis"} 256.0' in lines
    assert 'agentstack:kv_cache_tier_faults_total{tier="redis"} 3.0' in lines
    assert 'agentstack:kv_cache_bytes{tier="redis"} 600.0' in lines
