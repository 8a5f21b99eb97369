"""Blocks some engine is computing right now, announced in Redis for the other replicas.

Within one engine, vLLM's prefix cache already deduplicates in-flight prefills (a block's
hash is registered when it is allocated). Across engines the Redis tier only knows a
block once it is saved, so a reader arriving on another replica while the writer still
prefills would compute the whole context again. A scheduler therefore *claims* the
blocks it is about to compute (``SET NX`` with a TTL, so a crashed engine's claims
lapse) and releases them once they are saved; another scheduler that finds its next
block claimed by someone else waits for it (vLLM's connector answers "ask again later")
instead of computing it, up to a bounded wait.

Failures are answered as "nobody is computing it": a Redis outage costs a prefill,
never a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from cache.index import BlockHash
from cache.modes import RedisTierConfig

logger = logging.getLogger(__name__)

# KEYS: claims to drop. ARGV: 1 owner. Drops only the caller's own claims.
_LUA_RELEASE = """
local dropped = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    dropped = dropped + 1
  end
end
return dropped
"""


class InflightClaims:
    """Claims on blocks being computed, shared by every engine on one Redis.

    Args:
        config: the Redis tier's settings (prefix, timeouts, claim TTL).
        owner: this engine's name; claims are only ever released by their owner.
        url: overrides ``config.url``.
    """

    def __init__(self, config: RedisTierConfig, *, owner: str, url: str | None = None) -> None:
        target = url or config.url
        if target is None:
            raise ValueError("in-flight claims need a Redis url")
        self.owner = owner
        self._ttl_ms = max(1, int(config.inflight_ttl_s * 1000))
        self._timeout_s = config.timeout_s
        self._retry_after_s = config.retry_after_s
        self._client = redis.Redis.from_url(
            str(target), socket_timeout=config.timeout_s, socket_connect_timeout=config.timeout_s
        )
        self._prefix = f"{{{config.prefix}}}:inflight:"
        self._release = self._client.register_script(_LUA_RELEASE)
        self._down_until = 0.0

    def _key(self, key: BlockHash) -> str:
        return self._prefix + key.hex()

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _fault(self, error: redis.RedisError) -> None:
        self._down_until = time.monotonic() + self._retry_after_s
        logger.warning("in-flight claims unavailable (%s) for %.1f s", error, self._retry_after_s)

    def claim(self, keys: Sequence[BlockHash]) -> int:
        """Claim the blocks nobody claimed yet; returns how many this call claimed."""
        if not keys or not self._available():
            return 0
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(self._key(key), self.owner, nx=True, px=self._ttl_ms)
            return sum(bool(ok) for ok in pipe.execute())
        except redis.RedisError as e:
            self._fault(e)
            return 0

    def claimed_by_another(self, key: BlockHash) -> bool:
        """Whether another engine announced it is computing ``key``."""
        if not self._available():
            return False
        try:
            holder = self._client.get(self._key(key))
        except redis.RedisError as e:
            self._fault(e)
            return False
        return holder is not None and holder.decode() != self.owner

    def release(self, keys: Sequence[BlockHash]) -> int:
        """Drop this engine's claims on ``keys`` (saved, or never to be computed)."""
        if not keys or not self._available():
            return 0
        try:
            return int(self._release(keys=[self._key(k) for k in keys], args=[self.owner]))
        except redis.RedisError as e:
            self._fault(e)
            return 0

    def close(self) -> None:
        self._client.close()
