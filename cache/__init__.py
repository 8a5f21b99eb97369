"""The decomposed KV cache shared across role adapters (LRAgent).

Roles that read the same context share its cached prefix. In ``decomposed`` mode a block
holds K, ``V_base = x·W_v`` and ``x·A`` (A shared by all roles), the same for every role;
role j adds only its own ``s·(P·(x·A))·B_j`` at attention time. ``non-shared`` is vLLM's
own per-adapter prefix cache and ``full-shared`` reuses another role's K and V as they are.

Modules: ``modes`` (the switch and settings), ``layout`` (block contents, bytes per token,
binary form), ``index`` (chained block hashes with a tenant salt), ``tiers`` (engine
memory, Redis), ``store`` (prefix lookup over the tiers), ``stats`` (counters and
Prometheus series), ``reference`` (pure-PyTorch attention under each mode), ``adapters``
(shared-A families), ``connector`` (the vLLM KV connector), ``decomposed_model`` (the
decomposed-attention llama vLLM serves in decomposed mode) and ``vllm_plugin`` (its
registration).

Names are imported lazily, so reading the settings does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BlockHash": "cache.index",
    "BlockLayout": "cache.layout",
    "CacheConfig": "cache.modes",
    "CacheMode": "cache.modes",
    "CacheStats": "cache.stats",
    "CacheTier": "cache.tiers",
    "DecomposedBlock": "cache.layout",
    "KVBlock": "cache.layout",
    "KVCacheStore": "cache.store",
    "MatchResult": "cache.store",
    "MemoryTier": "cache.tiers",
    "ModelShape": "cache.layout",
    "PrefixHasher": "cache.index",
    "RedisTier": "cache.tiers",
    "RedisTierConfig": "cache.modes",
    "register_cache_metrics": "cache.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cache' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
