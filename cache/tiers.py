"""Storage tiers for encoded blocks, behind one interface, fastest first.

- ``MemoryTier``: engine-process memory, LRU bounded by bytes.
- ``RedisTier``: a Redis shared by engine processes and surviving restarts. Values are
  the blocks' binary form; capacity (bytes), sliding TTL and LRU order are kept by Lua
  scripts so several processes writing at once stay consistent.

A tier stores ``bytes`` under a ``BlockHash`` and knows nothing of tokens, roles or modes
(``cache.store`` does). Failures of a remote tier are counted in ``TierStats.faults`` and
answered as misses: a cache that is down must cost a prefill, never a request.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis

from cache.index import BlockHash
from cache.modes import RedisTierConfig
from cache.stats import TierStats

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class CacheTier(ABC):
    """A bounded key-value store of encoded blocks."""

    name: str
    stats: TierStats

    @abstractmethod
    def get(self, key: BlockHash) -> bytes | None:
        """The value, or None when absent (or the tier is unavailable); a hit refreshes LRU."""

    @abstractmethod
    def put(self, key: BlockHash, value: bytes) -> bool:
        """Store ``value``, evicting least-recently-used entries to fit; False if not stored."""

    @abstractmethod
    def contains(self, key: BlockHash) -> bool:
        """Whether ``key`` is held, without refreshing its LRU position."""

    @abstractmethod
    def remove(self, key: BlockHash) -> bool:
        """Drop ``key``; True if it was held."""

    @abstractmethod
    def bytes_held(self) -> int:
        """Bytes of values held now."""

    def batched_contains(self, keys: Sequence[BlockHash]) -> list[bool]:
        """``contains`` for many keys. Re-implement where one round trip can answer all."""
        return [self.contains(key) for key in keys]

    def get_many(self, keys: Sequence[BlockHash]) -> list[bytes | None]:
        """``get`` for many keys. Re-implement where one round trip can answer all."""
        return [self.get(key) for key in keys]

    def put_many(self, items: Sequence[tuple[BlockHash, bytes]]) -> int:
        """``put`` for many blocks; returns how many were stored. Re-implement to batch."""
        return sum(self.put(key, value) for key, value in items)

    def prefix_length(self, keys: Sequence[BlockHash]) -> int:
        """How many of ``keys``, from the first, are all held: the usable prefix."""
        count = 0
        for held in self.batched_contains(keys):
            if not held:
                break
            count += 1
        return count

    def close(self) -> None:
        """Release connections; the default holds none."""
        return None


class MemoryTier(CacheTier):
    """Blocks in this process's memory, least recently used evicted first.

    ``on_change(key, held)`` is called after a key is stored (True) or dropped (False), so
    another process can mirror which keys are resident (``ResidencyMirror``).
    """

    def __init__(
        self,
        capacity_bytes: int,
        *,
        name: str = "memory",
        on_change: Callable[[BlockHash, bool], None] | None = None,
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError("capacity_bytes must be positive")
        self.name = name
        self.stats = TierStats()
        self.capacity_bytes = capacity_bytes
        self._on_change = on_change
        self._entries: OrderedDict[BlockHash, bytes] = OrderedDict()
        self._bytes = 0
        # NOTE: vLLM calls the scheduler-side and worker-side connector from different
        # threads in some executors; every mutation holds this lock.
        self._lock = threading.Lock()

    def get(self, key: BlockHash) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: BlockHash, value: bytes) -> bool:
        if len(value) > self.capacity_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = value
            self._bytes += len(value)
            while self._bytes > self.capacity_bytes:
                victim_key, victim = self._entries.popitem(last=False)
                self._bytes -= len(victim)
                self.stats.evictions += 1
                self._changed(victim_key, False)
            self._changed(key, True)
        return True

    def _changed(self, key: BlockHash, held: bool) -> None:
        """Report under the lock, so listeners see changes in the order they happened."""
        if self._on_change is not None:
            self._on_change(key, held)

    def contains(self, key: BlockHash) -> bool:
        return key in self._entries

    def remove(self, key: BlockHash) -> bool:
        with self._lock:
            value = self._entries.pop(key, None)
            if value is None:
                return False
            self._bytes -= len(value)
            self._changed(key, False)
        return True

    def bytes_held(self) -> int:
        return self._bytes

    def keys(self) -> list[BlockHash]:
        """Held keys, least recently used first (for tests and debugging)."""
        with self._lock:
            return list(self._entries)


class ResidencyMirror(CacheTier):
    """Which keys another process's ``MemoryTier`` holds, without the values.

    vLLM's CPU build always runs the model worker in its own process, apart from the
    scheduler; the scheduler-side connector answers lookups from this mirror, which the
    worker keeps current through its ``on_change`` reports. ``get`` always misses: the
    values are read where they are, in the worker.
    """

    def __init__(self, *, name: str = "memory") -> None:
        self.name = name
        self.stats = TierStats()
        self._keys: set[BlockHash] = set()

    def apply(self, changes: Sequence[tuple[BlockHash, bool]]) -> None:
        """Replay the owner's ``on_change`` calls in the order they happened there."""
        for key, held in changes:
            if held:
                self._keys.add(key)
            else:
                self._keys.discard(key)

    def get(self, key: BlockHash) -> bytes | None:
        return None

    def put(self, key: BlockHash, value: bytes) -> bool:
        self._keys.add(key)
        return True

    def contains(self, key: BlockHash) -> bool:
        return key in self._keys

    def remove(self, key: BlockHash) -> bool:
        if key not in self._keys:
            return False
        self._keys.discard(key)
        return True

    def bytes_held(self) -> int:
        """Unknown here: the owner reports its own bytes."""
        return 0


# KEYS: 1 block, 2 lru zset (member: block key, score: logical clock), 3 sizes hash,
#       4 bytes counter, 5 clock. ARGV: 1 value, 2 ttl ms, 3 capacity bytes.
# Returns the number of blocks evicted, or -1 if the value alone exceeds the capacity.
# NOTE: the TTL is the same for every block and refreshed on each hit, so blocks expire in
# LRU order: expired blocks sit at the head of the zset and are forgotten first.
_LUA_FORGET = """
local function forget(k)
  local s = redis.call('HGET', KEYS[3], k)
  if s then
    redis.call('DECRBY', KEYS[4], s)
    redis.call('HDEL', KEYS[3], k)
  end
  redis.call('ZREM', KEYS[2], k)
end
local function sweep()
  while true do
    local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if not head or redis.call('EXISTS', head) == 1 then break end
    forget(head)
  end
end
"""
_LUA_PUT = _LUA_FORGET + """
local size = string.len(ARGV[1])
local capacity = tonumber(ARGV[3])
if size > capacity then return -1 end
sweep()
forget(KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), KEYS[1])
local held = redis.call('INCRBY', KEYS[4], size)
local evicted = 0
while held > capacity do
  local victim = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not victim or victim == KEYS[1] then break end
  redis.call('DEL', victim)
  forget(victim)
  held = tonumber(redis.call('GET', KEYS[4]))
  evicted = evicted + 1
end
return evicted
"""
# KEYS as above. ARGV: 1 ttl ms. Returns the value or nil; a hit refreshes TTL and LRU.
_LUA_GET = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), KEYS[1])
end
return v
"""
_LUA_REMOVE = _LUA_FORGET + """
forget(KEYS[1])
return redis.call('DEL', KEYS[1])
"""
_LUA_HELD = _LUA_FORGET + """
sweep()
return tonumber(redis.call('GET', KEYS[4]) or '0')
"""


class RedisTier(CacheTier):
    """Blocks in Redis: shared by engine processes, kept across restarts.

    All keys share one hash tag (``{prefix}``), so a Redis Cluster keeps them in one slot
    and the Lua scripts may touch them together.
    """

    def __init__(
        self,
        config: RedisTierConfig,
        *,
        url: str | None = None,
        client: redis.Redis | None = None,
        name: str = "redis",
    ) -> None:
        self.name = name
        self.stats = TierStats()
        self.config = config
        target = url or config.url
        if client is None and target is None:
            raise ValueError("RedisTier needs a url (in its config or as an argument) or a client")
        # Close only a client this tier created.
        self._owns_client = client is None
        self._client: redis.Redis = client or redis.Redis.from_url(
            str(target),
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
        )
        tag = f"{{{config.prefix}}}"
        self._block_prefix = f"{tag}:block:"
        self._meta = [f"{tag}:lru", f"{tag}:sizes", f"{tag}:bytes", f"{tag}:clock"]
        self._ttl_ms = config.ttl_s * 1000
        self._put = self._client.register_script(_LUA_PUT)
        self._get = self._client.register_script(_LUA_GET)
        self._remove = self._client.register_script(_LUA_REMOVE)
        self._held = self._client.register_script(_LUA_HELD)
        self._down_until = 0.0
        self._last_bytes_held = 0

    def _key(self, key: BlockHash) -> str:
        return self._block_prefix + key.hex()

    def _guard(self, operation: Callable[[], _T], fallback: _T) -> _T:
        """Run a Redis call; on failure count a fault and back off for ``retry_after_s``."""
        if time.monotonic() < self._down_until:
            return fallback
        try:
            return operation()
        except redis.RedisError as e:
            self.stats.faults += 1
            self._down_until = time.monotonic() + self.config.retry_after_s
            logger.warning(
                "Redis tier %s failed (%s); serving from the tiers above for %.1f s",
                self.name, e, self.config.retry_after_s,
            )
            return fallback

    def get(self, key: BlockHash) -> bytes | None:
        value = self._guard(
            lambda: self._get(keys=[self._key(key), *self._meta], args=[self._ttl_ms]), None
        )
        return bytes(value) if value is not None else None

    def put(self, key: BlockHash, value: bytes) -> bool:
        evicted = self._guard(
            lambda: int(
                self._put(
                    keys=[self._key(key), *self._meta],
                    args=[value, self._ttl_ms, self.config.capacity_bytes],
                )
            ),
            None,
        )
        if evicted is None or evicted < 0:
            return False
        self.stats.evictions += evicted
        return True

    def contains(self, key: BlockHash) -> bool:
        return bool(self._guard(lambda: self._client.exists(self._key(key)), 0))

    def batched_contains(self, keys: Sequence[BlockHash]) -> list[bool]:
        """One round trip for all keys (a pipeline of EXISTS)."""

        def run() -> list[bool]:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(self._key(key))
            return [bool(n) for n in pipe.execute()]

        return self._guard(run, [False] * len(keys))

    def get_many(self, keys: Sequence[BlockHash]) -> list[bytes | None]:
        """One round trip for all keys (a pipeline of the hit script)."""

        def run() -> list[bytes | None]:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                self._get(keys=[self._key(key), *self._meta], args=[self._ttl_ms], client=pipe)
            return [None if v is None else bytes(v) for v in pipe.execute()]

        return self._guard(run, [None] * len(keys))

    def put_many(self, items: Sequence[tuple[BlockHash, bytes]]) -> int:
        """One round trip for all blocks (a pipeline of the put script, each still atomic)."""

        def run() -> list[int]:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items:
                self._put(
                    keys=[self._key(key), *self._meta],
                    args=[value, self._ttl_ms, self.config.capacity_bytes],
                    client=pipe,
                )
            return [int(n) for n in pipe.execute()]

        results = self._guard(run, [-1] * len(items))
        self.stats.evictions += sum(n for n in results if n > 0)
        return sum(n >= 0 for n in results)

    def remove(self, key: BlockHash) -> bool:
        return bool(self._guard(lambda: self._remove(keys=[self._key(key), *self._meta]), 0))

    def bytes_held(self) -> int:
        """Bytes held now (expired blocks swept first); the last known figure if Redis is down."""
        held = self._guard(lambda: int(self._held(keys=["", *self._meta])), None)
        if held is not None:
            self._last_bytes_held = held
        return self._last_bytes_held

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
