"""The three ways roles can share a cached prefix, and the cache's settings.

LRAgent compares three caches for agents that share a backbone and a context:

- ``non-shared``: vLLM's own behaviour. A block is keyed by its tokens *and* the adapter
  that computed it, so every role prefills a shared context again.
- ``full-shared``: keyed by tokens only; a role reads K and V exactly as another role
  computed them. Cheapest, but V carries the writer's low-rank part ``s·(x·A)·B_writer``.
- ``decomposed``: keyed by tokens only; the block holds K, ``V_base = x·W_v`` and ``x·A``
  (A shared by all roles), and the reader adds its own ``s·(P·(x·A))·B_reader``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CacheMode(str, Enum):
    """What a cached block holds and who may read it."""

    NON_SHARED = "non-shared"
    FULL_SHARED = "full-shared"
    DECOMPOSED = "decomposed"

    @property
    def keyed_by_adapter(self) -> bool:
        """Whether the adapter is part of the block key, so roles never read each other's blocks."""
        return self is CacheMode.NON_SHARED

    @property
    def stores_low_rank(self) -> bool:
        """Whether blocks hold ``V_base`` and ``x·A`` instead of a finished V."""
        return self is CacheMode.DECOMPOSED


class RedisTierConfig(BaseModel):
    """The shared, persistent tier. Unset ``url`` means the service's own Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    url: str | None = None
    prefix: str = "agentstack:kv"
    capacity_bytes: int = Field(default=1 << 30, ge=1)
    ttl_s: int = Field(default=24 * 3600, ge=1, description="Sliding: refreshed on every hit.")
    timeout_s: float = Field(
        default=0.25, gt=0, description="Socket timeout; a slow Redis must not stall serving."
    )
    retry_after_s: float = Field(
        default=5.0, ge=0, description="After a fault, skip the tier this long before retrying."
    )
    inflight_ttl_s: float = Field(
        default=30.0, gt=0,
        description="An engine's claim on blocks it is computing lapses after this (a crashed "
        "engine's claims with it).",
    )
    inflight_wait_s: float = Field(
        default=30.0, ge=0,
        description="How long a request waits for blocks another engine is computing before it "
        "computes them itself; 0 turns cross-engine in-flight deduplication off.",
    )


class CacheConfig(BaseModel):
    """Settings of the shared prefix cache (``cache.*`` in the service settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: CacheMode = CacheMode.NON_SHARED
    block_size: int = Field(
        default=32,
        ge=1,
        description="Tokens per block in the shared modes. A reader recomputes from the last "
        "whole block its prompt shares, so small blocks reuse more; vLLM's CPU attention "
        "needs a multiple of 32.",
    )
    memory_capacity_bytes: int = Field(default=256 << 20, ge=1)
    shared_a_adapter: Path | None = Field(
        default=None,
        description="decomposed: an adapter whose v_proj lora_A every role shares (x·A is "
        "cached with it); unset: the largest family of packaged adapters.",
    )
    redis: RedisTierConfig = Field(default_factory=RedisTierConfig)
