"""vLLM general plugin: registers the decomposed-attention llama with vLLM's model registry,
and, for the shared cache modes, shares prefix-cache blocks across roles inside the engine.

vLLM runs every ``vllm.general_plugins`` entry point in each of its processes (API
frontend, engine core, workers), so the architecture is known wherever the model is
built. Registration alone changes nothing: an engine uses the model only when its
``hf_overrides`` name ``ARCHITECTURE`` (``cache.mode = decomposed``, see
``agentstack.engine``). The class is registered by its import path, so loading the
plugin imports no model code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSION = "0.32.0"
"""The vLLM release whose internals this package's plugins patch (here the block keys; in
``agentstack.vllm_ext`` the CPU LoRA ops); any other release is left as it is."""

ARCHITECTURE = "AgentstackDecomposedLlamaForCausalLM"
"""The architecture name an engine asks for in ``hf_overrides`` to serve decomposed."""

MODEL_CLASS = "cache.decomposed_model:DecomposedLlamaForCausalLM"

SHARED_A_KEY = "agentstack_shared_a"
"""``hf_config`` attribute (set through ``hf_overrides``): the adapter directory whose v_proj
lora_A every role shares; the model caches ``x·A`` with it."""


CACHED_BLOCKS_UTILITY = "agentstack_cached_blocks"
"""Engine-core utility method (``AsyncLLM.engine_core.call_utility_async``): the number of
physical KV blocks that hold a cached prompt block."""


def register() -> None:
    """Entry point of ``vllm.general_plugins``; safe to run more than once per process."""
    import vllm
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    if version_supported(vllm.__version__):
        from vllm.v1.engine.core import EngineCore

        setattr(EngineCore, CACHED_BLOCKS_UTILITY, _cached_blocks)


def _cached_blocks(core: Any) -> int:
    """Physical blocks of the engine's pool that hold a cached block: every paged copy of
    every prompt block it keeps, read from the block pool, so the bench counts copies
    rather than computing them from a layout."""
    pool = core.scheduler.kv_cache_manager.block_pool
    return sum(1 for block in pool.blocks if block.block_hash is not None)


def hf_overrides(shared_a_adapter: str) -> dict[str, str | list[str]]:
    """The engine's ``hf_overrides`` that select the decomposed model with this shared A."""
    return {"architectures": [ARCHITECTURE], SHARED_A_KEY: shared_a_adapter}


def version_supported(vllm_version: str) -> bool:
    """Local build tags (``0.32.0+cpu``) count as the release they build."""
    return vllm_version.split("+")[0] == SUPPORTED_VLLM_VERSION


def patch_applies(patch: str, without_it: str, vllm_version: str | None = None) -> bool:
    """Whether a patch written for ``SUPPORTED_VLLM_VERSION`` may go into this vLLM
    (``vllm_version``, default the installed one); if not, one warning saying what
    ``patch`` is and what staying ``without_it`` means."""
    if vllm_version is None:
        import vllm

        vllm_version = vllm.__version__
    if version_supported(vllm_version):
        return True
    logger.warning("agentstack: %s written for vLLM %s; this is vLLM %s, so %s",
                   patch, SUPPORTED_VLLM_VERSION, vllm_version, without_it)
    return False


class SharedBlockKeys:
    """Replaces ``kv_cache_utils._gen_lora_extra_hash_keys``: a block's key leaves the
    adapter out (tokens, parent block and tenant salt remain) for requests whose adapter
    ``shares`` blocks; any other adapter keeps vLLM's own key."""

    def __init__(self, stock: Callable[[Any], list[Any]], shares: Callable[[Any], bool]) -> None:
        self.stock = stock
        self.shares = shares

    def __call__(self, request: Any) -> list[Any]:
        return [] if self.shares(request) else self.stock(request)


def install_shared_block_keys(
    vllm_version: str | None = None, *, shares: Callable[[Any], bool] | None = None
) -> bool:
    """One engine copy of a shared context for every role that can share it.

    vLLM keys each prefix-cache block by its tokens, the tenant salt and the LoRA adapter,
    so every role reading a context gets its own paged copy. In the shared cache modes a
    block's content does not depend on the role that reads it (`full-shared` serves the
    writer's K and V by design; `decomposed` pages K, the base V and x·A of the family's
    one A, and each role adds its own B after attention), so there blocks are keyed as the
    cache's own tiers key them (``cache.store.block_hashes``): tokens and salt. A reader
    then finds the writer's blocks in engine memory and reads them in place.

    ``shares(request)`` says which requests may (default: all); in decomposed mode, those
    of the shared-A family, while an adapter outside it keeps vLLM's per-adapter keys.
    Called by the connector's scheduler side in the shared modes only; `non-shared`
    engines keep vLLM's keys. Returns whether the keys are shared (not on another vLLM
    release).
    """
    if not patch_applies("shared prefix-cache keys are", "each role keeps its own engine copy of a shared "
                         "context (the cache tiers still share it)", vllm_version):
        return False
    from vllm.v1.core import kv_cache_utils

    stock = kv_cache_utils._gen_lora_extra_hash_keys
    if isinstance(stock, SharedBlockKeys):
        stock = stock.stock
    kv_cache_utils._gen_lora_extra_hash_keys = SharedBlockKeys(stock, shares or (lambda request: True))
    return True


def shared_block_keys_installed() -> bool:
    from vllm.v1.core import kv_cache_utils

    return isinstance(kv_cache_utils._gen_lora_extra_hash_keys, SharedBlockKeys)
