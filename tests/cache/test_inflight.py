"""In-flight claims in a real Redis: what one engine computes, another waits for."""

from __future__ import annotations

import time

from cache.index import BlockHash
from cache.inflight import InflightClaims
from tests.cache.conftest import redis_config


def key(i: int) -> BlockHash:
    return BlockHash(i.to_bytes(32, "big"))


def test_a_claim_is_seen_by_other_engines_only(redis_url: str) -> None:
    config = redis_config()
    writer = InflightClaims(config, owner="engine-a", url=redis_url)
    reader = InflightClaims(config, owner="engine-b", url=redis_url)
    assert writer.claim([key(0), key(1)]) == 2
    assert reader.claimed_by_another(key(1))
    assert not writer.claimed_by_another(key(1)), "an engine never waits for itself"
    assert not reader.claimed_by_another(key(2))
    assert reader.claim([key(1), key(2)]) == 1, "the first claim holds"


def test_only_the_owner_releases_its_claims(redis_url: str) -> None:
    config = redis_config()
    writer = InflightClaims(config, owner="engine-a", url=redis_url)
    reader = InflightClaims(config, owner="engine-b", url=redis_url)
    writer.claim([key(0)])
    assert reader.release([key(0)]) == 0
    assert reader.claimed_by_another(key(0))
    assert writer.release([key(0)]) == 1
    assert not reader.claimed_by_another(key(0))


def test_a_dead_engines_claims_lapse(redis_url: str) -> None:
    config = redis_config(inflight_ttl_s=0.2)
    InflightClaims(config, owner="engine-a", url=redis_url).claim([key(0)])
    reader = InflightClaims(config, owner="engine-b", url=redis_url)
    assert reader.claimed_by_another(key(0))
    time.sleep(0.3)
    assert not reader.claimed_by_another(key(0))


def test_redis_down_means_nobody_is_computing(dead_redis_url: str) -> None:
    claims = InflightClaims(redis_config(retry_after_s=0), owner="engine-a", url=dead_redis_url)
    assert claims.claim([key(0)]) == 0
    assert not claims.claimed_by_another(key(0))
    assert claims.release([key(0)]) == 0
