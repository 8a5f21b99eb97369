"""The shared prefix cache: prefix index over ordered tiers, for one mode.

``lookup`` finds how many leading full blocks of a prompt some tier holds and changes
nothing (vLLM's connector asks that more than once per request). ``load`` fetches them,
promotes blocks found in a lower tier to the tiers above, and records hits, misses and
cross-role reuse. ``save`` writes through to every tier, so another engine process (or
this one after a restart) finds the prefix in Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cache.index import BlockHash, PrefixHasher
from cache.layout import Block, BlockFormatError, BlockLayout, DecomposedBlock, decode_block, encode_block
from cache.modes import CacheConfig, CacheMode
from cache.stats import CacheStats, TierView
from cache.tiers import CacheTier, MemoryTier, RedisTier

logger = logging.getLogger(__name__)

BASE_WRITER = "base"
"""Writer name of blocks computed with no adapter."""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The cached prefix of one prompt.

    Attributes:
        hashes: the matched blocks' hashes, first block first.
        tiers: for each matched block, the name of the fastest tier holding it.
        block_size: tokens per block.
    """

    hashes: tuple[BlockHash, ...]
    tiers: tuple[str, ...]
    block_size: int

    @property
    def num_tokens(self) -> int:
        return len(self.hashes) * self.block_size


def cache_namespace(model_id: str, layout: BlockLayout, block_size: int, shared_a: str = "") -> str:
    """What must be equal for two processes to share blocks.

    Args:
        model_id: the served model (name plus a weights checksum in production).
        layout: the block layout; blocks of another mode or rank never match.
        block_size: tokens per block.
        shared_a: ``cache.adapters.shared_a_fingerprint`` (decomposed mode): x·A computed
            with another A is another number.
    """
    return "|".join(
        ["agentstack-kv-v1", model_id, layout.mode.value, f"r{layout.rank}", f"b{block_size}", shared_a]
    )


class KVCacheStore:
    """Prefix index plus tiers for one cache mode."""

    def __init__(self, layout: BlockLayout, hasher: PrefixHasher, tiers: Sequence[CacheTier]) -> None:
        if not tiers:
            raise ValueError("a cache store needs at least one tier")
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        self.layout = layout
        self.hasher = hasher
        self.tiers: tuple[CacheTier, ...] = tuple(tiers)
        self.stats = CacheStats()
        # Loads run on the engine's thread and on the connector's load thread.
        self._stats_lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        layout: BlockLayout,
        *,
        model_id: str,
        shared_a: str = "",
        redis_url: str | None = None,
        first_tier: CacheTier | None = None,
    ) -> KVCacheStore:
        """Memory tier, then Redis when enabled (``config.redis.url`` or ``redis_url``).

        ``first_tier`` replaces the default memory tier (e.g. one with a change listener,
        or the scheduler's mirror of the worker's memory tier).
        """
        if layout.mode is not config.mode:
            raise ValueError(f"layout is for {layout.mode.value}, config says {config.mode.value}")
        tiers: list[CacheTier] = [first_tier or MemoryTier(config.memory_capacity_bytes)]
        url = config.redis.url or redis_url
        if config.redis.enabled and url:
            tiers.append(RedisTier(config.redis, url=url))
        namespace = cache_namespace(model_id, layout, config.block_size, shared_a)
        return cls(layout, PrefixHasher(config.block_size, namespace), tiers)

    @property
    def mode(self) -> CacheMode:
        return self.layout.mode

    def tier_views(self) -> dict[str, TierView]:
        return {tier.name: TierView(tier.stats, tier.bytes_held) for tier in self.tiers}

    ##### Public API #####

    def block_hashes(
        self, token_ids: Sequence[int], *, salt: str, adapter: str | None, own_keys: bool = False
    ) -> list[BlockHash]:
        """Chained hashes of the full blocks of ``token_ids`` (see ``cache.index``).

        Args:
            token_ids: the prompt.
            salt: the tenant salt; blocks saved under another salt never match.
            adapter: the role's adapter (None: base model). Only non-shared mode keys by it...
            own_keys: ...or an adapter whose blocks no other role may read (decomposed
                mode, an adapter outside the shared-A family).
        """
        keyed = (adapter or BASE_WRITER) if self.mode.keyed_by_adapter or own_keys else None
        return self.hasher.block_hashes(token_ids, salt=salt, adapter=keyed)

    def lookup(self, token_ids: Sequence[int], *, salt: str, adapter: str | None) -> MatchResult:
        """The longest cached prefix of ``token_ids`` in full blocks. No side effects."""
        return self.match(self.block_hashes(token_ids, salt=salt, adapter=adapter))

    def match(self, hashes: Sequence[BlockHash]) -> MatchResult:
        """How many of ``hashes``, from the first, some tier holds. No side effects."""
        remaining = list(hashes)
        found: list[str] = []
        for tier in self.tiers:
            if not remaining:
                break
            n = tier.prefix_length(remaining)
            found += [tier.name] * n
            remaining = remaining[n:]
        return MatchResult(tuple(hashes[: len(found)]), tuple(found), self.hasher.block_size)

    def holds(self, key: BlockHash) -> bool:
        """Whether the fastest tier holds ``key`` (then every write-through already happened)."""
        return self.tiers[0].contains(key)

    def load(self, match: MatchResult, *, adapter: str | None, num_query_tokens: int) -> list[Block]:
        """Fetch the matched blocks and record the lookup's hits and misses.

        A block that vanished since ``lookup`` (evicted, expired, tier down) ends the
        prefix there: the blocks returned are always a gapless prefix.

        Args:
            match: a ``lookup`` result.
            adapter: the reading role's adapter (None: base model), for cross-role reuse.
            num_query_tokens: the prompt tokens the caller looked up (hits + misses).
        """
        by_name = {tier.name: tier for tier in self.tiers}
        blocks: list[tuple[str, Block]] = []
        # One batched read per tier (one Redis round trip for all its blocks).
        values: dict[BlockHash, bytes | None] = {}
        for tier_name in dict.fromkeys(match.tiers):
            keys = [k for k, t in zip(match.hashes, match.tiers) if t == tier_name]
            values.update(zip(keys, by_name[tier_name].get_many(keys)))
        for key, tier_name in zip(match.hashes, match.tiers):
            tier = by_name[tier_name]
            value = values[key]
            if value is None:
                break
            try:
                block = decode_block(value)
            except BlockFormatError as e:
                logger.warning("dropping unreadable block from tier %s: %s", tier.name, e)
                tier.stats.faults += 1
                tier.remove(key)
                break
            for upper in self.tiers:
                if upper is tier:
                    break
                upper.put(key, value)
            blocks.append((tier.name, block))
        hit = sum(b.num_tokens for _, b in blocks)
        reader = adapter or BASE_WRITER
        with self._stats_lock:
            for tier_name, block in blocks:
                self.stats.hit_tokens[(tier_name, self.mode.value)] += block.num_tokens
            self.stats.miss_tokens[self.mode.value] += max(0, num_query_tokens - hit)
            if any(b.writer != reader for _, b in blocks):
                self.stats.cross_role_reuses[self.mode.value] += 1
        return [b for _, b in blocks]

    def save(
        self, token_ids: Sequence[int], blocks: Sequence[Block], *, salt: str, adapter: str | None
    ) -> int:
        """Write the blocks of ``token_ids``'s first full blocks to every tier.

        ``blocks[i]`` holds tokens ``[i·block_size, (i+1)·block_size)``. Returns the number
        of blocks written.
        """
        hashes = self.block_hashes(token_ids, salt=salt, adapter=adapter)
        if len(blocks) > len(hashes):
            raise ValueError(f"{len(blocks)} blocks for {len(hashes)} full blocks of tokens")
        return self.put(hashes[: len(blocks)], blocks)

    def put(self, hashes: Sequence[BlockHash], blocks: Sequence[Block]) -> int:
        """Write blocks under precomputed hashes to every tier; returns how many were written.

        Blocks the fastest tier already holds are skipped: their write-through happened.

        Raises:
            ValueError: a block of the wrong kind or size for this store's layout.
        """
        if len(hashes) != len(blocks):
            raise ValueError(f"{len(hashes)} hashes for {len(blocks)} blocks")
        items: list[tuple[BlockHash, bytes]] = []
        for key, block in zip(hashes, blocks):
            self._check(block)
            if not self.holds(key):
                items.append((key, encode_block(block)))
        if items:
            # One batched write per tier (one Redis round trip for the lot).
            for tier in self.tiers:
                tier.put_many(items)
        return len(items)

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    ##### Internal Helper Functions #####

    def _check(self, block: Block) -> None:
        if isinstance(block, DecomposedBlock) != self.mode.stores_low_rank:
            raise ValueError(f"a {type(block).__name__} cannot be stored in {self.mode.value} mode")
        if block.num_tokens != self.hasher.block_size:
            raise ValueError(f"block of {block.num_tokens} tokens, block size is {self.hasher.block_size}")

