"""Tiers: exact LRU eviction by bytes, binary values in a real Redis, TTL, and faults as misses."""

from __future__ import annotations

import time

import pytest

from cache.index import BlockHash
from cache.tiers import CacheTier, MemoryTier, RedisTier, ResidencyMirror
from tests.cache.conftest import redis_config


def key(i: int) -> BlockHash:
    return BlockHash(i.to_bytes(32, "big"))


def value(i: int, size: int = 100) -> bytes:
    return bytes([i % 256]) * (size - 1) + b"\x00"


@pytest.fixture(params=["memory", "redis"])
def tier(request: pytest.FixtureRequest) -> CacheTier:
    """A 350-byte tier of either kind: three 100-byte values fit, a fourth evicts."""
    if request.param == "memory":
        return MemoryTier(350)
    url = request.getfixturevalue("redis_url")
    redis_tier = RedisTier(redis_config(capacity_bytes=350), url=url)
    request.addfinalizer(redis_tier.close)
    return redis_tier


def test_binary_values_round_trip(tier: CacheTier) -> None:
    data = bytes(range(256))[:100]
    assert tier.put(key(1), data)
    assert tier.get(key(1)) == data
    assert tier.get(key(2)) is None
    assert tier.contains(key(1)) and not tier.contains(key(2))


def test_least_recently_used_is_evicted_first(tier: CacheTier) -> None:
    for i in (1, 2, 3):
        assert tier.put(key(i), value(i))
    assert tier.get(key(1)) is not None  # 2 is now the least recently used
    assert tier.put(key(4), value(4))
    assert [tier.contains(key(i)) for i in (1, 2, 3, 4)] == [True, False, True, True]
    assert tier.stats.evictions == 1
    assert tier.bytes_held() == 300


def test_overwrite_does_not_double_count(tier: CacheTier) -> None:
    tier.put(key(1), value(1))
    tier.put(key(1), value(1, size=50))
    assert tier.bytes_held() == 50
    assert tier.remove(key(1)) and tier.bytes_held() == 0
    assert not tier.remove(key(1))


def test_a_value_larger_than_the_tier_is_refused(tier: CacheTier) -> None:
    tier.put(key(1), value(1))
    assert not tier.put(key(2), value(2, size=400))
    assert tier.contains(key(1)) and tier.bytes_held() == 100


def test_prefix_length_stops_at_the_first_missing_key(tier: CacheTier) -> None:
    for i in (1, 2, 4):
        tier.put(key(i), value(i))
    assert tier.prefix_length([key(1), key(2), key(3), key(4)]) == 2
    assert tier.prefix_length([key(3), key(1)]) == 0


def test_redis_blocks_expire_and_stop_counting(redis_url: str) -> None:
    tier = RedisTier(redis_config(ttl_s=1), url=redis_url)
    tier.put(key(1), value(1))
    assert tier.bytes_held() == 100
    time.sleep(1.2)
    assert tier.get(key(1)) is None
    assert tier.bytes_held() == 0
    tier.close()


def test_redis_tier_is_shared_by_two_clients(redis_url: str) -> None:
    config = redis_config()
    writer, reader = RedisTier(config, url=redis_url), RedisTier(config, url=redis_url)
    writer.put(key(1), value(1))
    assert reader.get(key(1)) == value(1)
    writer.close()
    reader.close()


def test_redis_down_is_a_counted_miss_not_an_error(dead_redis_url: str) -> None:
    tier = RedisTier(redis_config(retry_after_s=0), url=dead_redis_url)
    assert tier.get(key(1)) is None
    assert tier.put(key(1), value(1)) is False
    assert tier.prefix_length([key(1)]) == 0
    assert tier.bytes_held() == 0
    assert tier.stats.faults == 4


def test_after_a_fault_redis_is_skipped_for_a_while(dead_redis_url: str) -> None:
    tier = RedisTier(redis_config(retry_after_s=60), url=dead_redis_url)
    started = time.monotonic()
    for _ in range(20):
        tier.get(key(1))
    assert tier.stats.faults == 1
    assert time.monotonic() - started < 1.0


def test_a_mirror_follows_the_memory_tier_it_listens_to() -> None:
    changes: list[tuple[BlockHash, bool]] = []
    owner = MemoryTier(250, on_change=lambda k, held: changes.append((k, held)))
    mirror = ResidencyMirror()
    for i in (1, 2, 3):
        owner.put(key(i), value(i))
    owner.remove(key(2))
    mirror.apply(changes)
    assert [mirror.contains(key(i)) for i in (1, 2, 3)] == [False, False, True]
    assert mirror.prefix_length([key(3)]) == 1 and mirror.get(key(3)) is None


def test_batched_puts_and_gets_keep_lru_and_capacity(tier: CacheTier) -> None:
    assert tier.put_many([(key(i), value(i)) for i in range(4)]) == 4
    # The fourth value evicted the first, as four single puts would have.
    assert tier.get_many([key(i) for i in range(4)]) == [None, value(1), value(2), value(3)]
    assert tier.bytes_held() == 300


def test_a_batched_write_to_redis_down_is_one_counted_fault(dead_redis_url: str) -> None:
    redis_tier = RedisTier(redis_config(retry_after_s=0), url=dead_redis_url)
    assert redis_tier.put_many([(key(i), value(i)) for i in range(3)]) == 0
    assert redis_tier.get_many([key(0), key(1)]) == [None, None]
    assert redis_tier.stats.faults == 2
