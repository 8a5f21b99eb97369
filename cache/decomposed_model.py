"""The packaged llama with decomposed attention: its paged KV cache is role-independent.

LRAgent: with no LoRA on K and one v_proj lora_A shared by all roles, role j's values are
``V_j = x·W_vᵀ + s·(x·Aᵀ)·B_jᵀ``, so attention splits as::

    O_j = P·V_base + s·(P·(x·Aᵀ))·B_jᵀ          (V_base = x·W_vᵀ)

This model makes vLLM's ordinary paged attention compute both terms at once. Per KV head
it caches ``V' = [V_base_h | x·Aᵀ | 0…]`` at a head size the kernels support (64 + r → 80
for r = 16), with q and K zero-padded to that size and the softmax scale kept at
``1/sqrt(head_dim)``: the scores are unchanged and the output is ``[P·V_base | P·x·Aᵀ]``.
The layer then adds ``s·(P·x·Aᵀ)·B_jᵀ`` per token for that token's role, before o_proj.
``cache.reference.padded_decomposed_attention`` is the same computation in plain PyTorch.

Nothing a role writes into the cache depends on the role, so the KV connector, keyed
without the adapter, hands one role's prefix to every other role (``cache.connector``).

Adapters: vLLM's LoRA manager loads every role adapter as usual and keeps q/o (and any
other) LoRA. v_proj is a layer of its own here, so vLLM wraps it separately; the model
never runs that wrapper's forward (which would add ``s·x·A·B`` into V before the cache
write). It runs the wrapped base layer for ``V_base``, takes ``x·A`` from the shared A
(``SHARED_A_KEY``: loaded from the family's adapter, part of the backbone extension), and
reads each role's ``s·B`` from the wrapper's slot table, indexed by the token's LoRA slot
(``lora_slots``: the one read of vLLM LoRA internals, pinned by a test).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F
from vllm.config import CacheConfig, VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from vllm.model_executor.models.utils import WeightsMapper, extract_layer_index
from vllm.platforms import current_platform
from vllm.v1.attention.backend import AttentionType

from cache.adapters import ADAPTER_WEIGHTS
from cache.reference import padded_head_size
from cache.vllm_plugin import SHARED_A_KEY

_V_A_KEY = "base_model.model.model.layers.{layer}.self_attn.v_proj.lora_A.weight"


def lora_slots(layer: nn.Module, num_tokens: int) -> torch.Tensor | None:
    """Each token's vLLM LoRA slot in this forward (-1: no adapter), or None if not wrapped.

    NOTE: vLLM hands a model no per-token adapter through a public API. Its LoRA manager
    gives every wrapped layer a ``punica_wrapper`` whose ``token_lora_indices`` holds the
    slot of each token of the batch; slots index the wrapper's ``lora_b_stacked``. Pinned
    to vLLM 0.32 by ``tests/cache/test_decomposed_model.py``.
    """
    wrapper = getattr(layer, "punica_wrapper", None)
    if wrapper is None:
        return None
    slots: torch.Tensor = wrapper.token_lora_indices
    if slots.shape[0] < num_tokens:
        raise RuntimeError(f"LoRA mapping covers {slots.shape[0]} tokens, the batch has {num_tokens}")
    return slots[:num_tokens]


@functools.lru_cache(maxsize=4)
def _shared_a_file(adapter_dir: str) -> dict[int, torch.Tensor]:
    """Every layer's v_proj lora_A ``[r, hidden]`` of one adapter, read once per process."""
    weights: dict[int, torch.Tensor] = {}
    with safe_open(str(Path(adapter_dir) / ADAPTER_WEIGHTS), "pt") as f:
        keys = set(f.keys())
        layer = 0
        while (key := _V_A_KEY.format(layer=layer)) in keys:
            weights[layer] = f.get_tensor(key)
            layer += 1
    if not weights:
        raise ValueError(f"{adapter_dir} has no v_proj lora_A: it cannot define the shared A")
    return weights


def _supported_head_sizes() -> list[int]:
    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    return list(range(16, 257, 16))


def decomposed_head_size(head_dim: int, rank: int) -> int:
    """The paged head size that holds ``[V_base_h | x·A]``: the smallest a kernel supports."""
    return padded_head_size(head_dim, rank, _supported_head_sizes())


class DecomposedLlamaAttention(nn.Module):
    """Llama attention whose cached V per KV head is ``[V_base | x·A | 0]`` (see module doc).

    Takes ``LlamaAttention``'s arguments, so ``LlamaDecoderLayer`` builds it unchanged.
    """

    def __init__(
        self,
        config: Any,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        max_position_embeddings: int = 8192,
        quant_config: QuantizationConfig | None = None,
        bias: bool = False,
        bias_o_proj: bool = False,
        cache_config: CacheConfig | None = None,
        prefix: str = "",
        attn_type: str = AttentionType.DECODER,
    ) -> None:
        super().__init__()
        if get_tensor_model_parallel_world_size() != 1:
            raise ValueError("the decomposed llama runs without tensor parallelism")
        if attn_type != AttentionType.DECODER:
            raise ValueError("the decomposed llama is a causal decoder")
        shared_a_dir = getattr(config, SHARED_A_KEY, None)
        if not shared_a_dir:
            raise ValueError(f"the decomposed llama needs hf_config.{SHARED_A_KEY} (the shared-A adapter)")
        layer = extract_layer_index(prefix)
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = getattr(config, "head_dim", None) or hidden_size // num_heads
        shared_a = _shared_a_file(str(shared_a_dir))[layer]
        self.rank = int(shared_a.shape[0])
        self.padded = decomposed_head_size(self.head_dim, self.rank)
        self.register_buffer("shared_a", shared_a.to(torch.get_default_dtype()), persistent=False)

        def column(name: str, heads: int) -> ColumnParallelLinear:
            return ColumnParallelLinear(
                hidden_size, heads * self.head_dim, bias=bias, quant_config=quant_config,
                prefix=f"{prefix}.{name}",
            )

        # Three projections, not vLLM's fused qkv_proj: vLLM must wrap v_proj's LoRA apart
        # from q's, so V can be computed without it.
        self.q_proj = column("q_proj", num_heads)
        self.k_proj = column("k_proj", num_kv_heads)
        self.v_proj = column("v_proj", num_kv_heads)
        self.o_proj = RowParallelLinear(
            num_heads * self.head_dim, hidden_size, bias=bias_o_proj, quant_config=quant_config,
            prefix=f"{prefix}.o_proj",
        )
        self.rotary_emb = get_rope(
            self.head_dim,
            max_position=max_position_embeddings,
            rope_parameters=getattr(config, "rope_parameters", None),
            is_neox_style=True,
        )
        self.attn = Attention(
            num_heads,
            self.padded,
            self.head_dim**-0.5,  # the scores of the unpadded heads
            num_kv_heads=num_kv_heads,
            cache_config=cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        t, d, r = hidden_states.shape[0], self.head_dim, self.rank
        q, _ = self.q_proj(hidden_states)
        k, _ = self.k_proj(hidden_states)
        # The wrapped layer's own forward would add this role's s·x·A·B into V.
        v_base, _ = getattr(self.v_proj, "base_layer", self.v_proj)(hidden_states)
        xa = hidden_states @ self.shared_a.T
        slots = lora_slots(self.v_proj, t)
        if slots is not None:
            # An adapter outside the family caches its own finished V and no x·A (its
            # blocks are keyed by adapter, so no other role reads them): plain LoRA.
            outside = self._outside_family(slots)
            v_own, _ = self.v_proj(hidden_states)
            v_base = torch.where(outside[:, None], v_own, v_base)
            xa = xa * (~outside).to(xa.dtype)[:, None]
        q, k = self.rotary_emb(positions, q, k)
        pad = self.padded - d
        q = F.pad(q.view(t, self.num_heads, d), (0, pad))
        k = F.pad(k.view(t, self.num_kv_heads, d), (0, pad))
        v = hidden_states.new_zeros(t, self.num_kv_heads, self.padded)
        v[..., :d] = v_base.view(t, self.num_kv_heads, d)
        v[..., d : d + r] = xa[:, None, :]
        packed = self.attn(q.reshape(t, -1), k.reshape(t, -1), v.reshape(t, -1))
        packed = packed.view(t, self.num_heads, self.padded)
        attended = packed[..., :d] + self._low_rank(packed[..., d : d + r], slots)
        output, _ = self.o_proj(attended.reshape(t, self.num_heads * d))
        return output

    def _outside_family(self, slots: torch.Tensor) -> torch.Tensor:
        """Per token, whether its adapter's v_proj lora_A is neither the shared A nor empty.

        Read from vLLM's own slot table (``lora_a_stacked``: ``[slots, 1, max_rank,
        hidden]``), with fixed shapes and no host sync, like ``low_rank_values``.
        """
        a = self.v_proj.lora_a_stacked[0][:, 0]
        head, rest = a[:, : self.rank], a[:, self.rank :]
        shared = (head == self.shared_a.to(a.dtype)).flatten(1).all(1)
        empty = (head == 0).flatten(1).all(1)
        member = (shared | empty) & (rest == 0).flatten(1).all(1)
        return (slots >= 0) & ~member[slots.clamp(min=0)]

    def _low_rank(self, pxa: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        if slots is None:
            return pxa.new_zeros(*pxa.shape[:2], self.head_dim)
        # vLLM keeps each active adapter's v_proj B, with its scale folded in, per slot:
        # [slots, 1, kv_heads·d, max_rank]. Adapters without v_proj LoRA hold zeros.
        return low_rank_values(pxa, slots, self.v_proj.lora_b_stacked[0], self.num_kv_heads, self.head_dim)


def low_rank_values(pxa: torch.Tensor, slots: torch.Tensor, b_stacked: torch.Tensor,
                    num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """``s·(P·x·A)·B_jᵀ`` per token, B_j of the token's role (zero without an adapter).

    Semantics (h a query head, g(h) its KV head)::

        out[t, h] = pxa[t, h] @ (s·B_{slot(t)})[g(h)·d : (g(h)+1)·d, :r]ᵀ

    Fixed shapes and no host sync (no ``unique``/``nonzero``): every token's product is
    taken against every slot's B in one batched matmul and its own slot's row kept, so
    the step can run under a compiled graph. With a handful of slots and rank 16 the
    extra products are a few kFLOPs per token.
    """
    t, heads, r = pxa.shape
    slot_count = b_stacked.shape[0]
    b = b_stacked[:, 0, :, :r].reshape(slot_count, num_kv_heads, 1, head_dim, r)
    b = b.expand(-1, -1, heads // num_kv_heads, -1, -1).reshape(slot_count, heads, head_dim, r)
    every_slot = torch.einsum("thr,shdr->tshd", pxa, b.to(pxa.dtype))  # [t, slots, heads, d]
    index = slots.clamp(min=0).view(t, 1, 1, 1).expand(t, 1, heads, head_dim)
    own = every_slot.gather(1, index).squeeze(1)
    return own * (slots >= 0).view(t, 1, 1).to(own.dtype)


class DecomposedLlamaDecoderLayer(LlamaDecoderLayer):
    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config: Any = None) -> None:
        super().__init__(
            vllm_config=vllm_config, prefix=prefix, config=config,
            attn_layer_type=DecomposedLlamaAttention,
        )


class DecomposedLlamaModel(LlamaModel):
    # q/k/v stay separate modules (checkpoint names as they are); gate/up stay fused.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_stacked={".gate_proj": (".gate_up_proj", 0), ".up_proj": (".gate_up_proj", 1)}
    )


class DecomposedLlamaForCausalLM(LlamaForCausalLM):
    """``LlamaForCausalLM`` with ``DecomposedLlamaAttention`` in every layer."""

    hf_to_vllm_mapper = DecomposedLlamaModel.hf_to_vllm_mapper
    packed_modules_mapping = {"gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix, layer_type=DecomposedLlamaDecoderLayer)

    def _init_model(
        self, vllm_config: VllmConfig, prefix: str = "", layer_type: type[nn.Module] = DecomposedLlamaDecoderLayer
    ) -> nn.Module:
        return DecomposedLlamaModel(vllm_config=vllm_config, prefix=prefix, layer_type=layer_type)
