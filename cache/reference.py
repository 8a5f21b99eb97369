"""Pure-PyTorch reference of one attention layer under the three cache modes.

LRAgent (shared-A, B-only LoRA on V; no LoRA on K): for role j with v_proj LoRA
``(A, B_j)``, scale ``s`` and attention weights ``P``::

    V_j = x·W_vᵀ + s·(x·Aᵀ)·B_jᵀ
    O_j = P·V_j = P·V_base + s·(P·(x·Aᵀ))·B_jᵀ          (V_base = x·W_vᵀ)

so a cache holding K, V_base and x·Aᵀ per token serves every role exactly, given the same
hidden states x. Full sharing instead reads ``V_a`` that role a computed, which differs
from ``V_j`` by ``s·(x·Aᵀ)·(B_a − B_j)ᵀ``.

Semantics (per head h, GQA group g(h), causal over absolute positions)::

    q = rope(x·W_qᵀ + s·(x·A_qᵀ)·B_qᵀ)      k = rope(x·W_kᵀ)
    P = softmax(q·kᵀ / sqrt(d))
    out = concat_h(P_h·V_g(h)) · W_oᵀ + s·(concat·A_oᵀ)·B_oᵀ

``padded_decomposed_attention`` computes the same thing the way a paged-attention
kernel with one head size could: each KV head's value row is ``[V_base_h | x·Aᵀ | 0…]``
and K is zero-padded to that width, so one ordinary attention call returns ``P·V_base``
and ``P·(x·Aᵀ)`` together. It checks that formulation before any kernel is touched.

Everything here runs in the weights' dtype; tests use float64 so "equal" means equal up
to float64 rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

_MODEL_FILE = "model.safetensors"


@dataclass(frozen=True, slots=True)
class AttentionWeights:
    """One layer's attention projections (rows are output features, as in nn.Linear)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float

    @property
    def scale(self) -> float:
        return float(self.head_dim) ** -0.5


@dataclass(frozen=True, slots=True)
class LoRAPair:
    """``delta(x) = scale·(x·Aᵀ)·Bᵀ``: A is ``[r, in]``, B is ``[out, r]``."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x @ self.a.T) @ self.b.T


@dataclass(frozen=True, slots=True)
class RoleLoRA:
    """A role's adapter on one layer. LRAgent's shape: q, v and o only, never k."""

    q: LoRAPair | None = None
    v: LoRAPair | None = None
    o: LoRAPair | None = None


@dataclass(frozen=True, slots=True)
class FullKV:
    """Cached K and V as the writing role computed them (non-shared, full-shared)."""

    k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor


@dataclass(frozen=True, slots=True)
class DecomposedKV:
    """Cached K, V_base and x·Aᵀ: the same whichever role reads them."""

    k: torch.Tensor
    v_base: torch.Tensor
    xa: torch.Tensor
    positions: torch.Tensor


##### Loading #####


def load_attention_weights(
    model_dir: Path, layer: int, *, dtype: torch.dtype = torch.float64
) -> AttentionWeights:
    """Layer ``layer``'s q/k/v/o projections from a Hugging Face llama directory."""
    config = json.loads((model_dir / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    prefix = f"model.layers.{layer}.self_attn"
    with safe_open(str(model_dir / _MODEL_FILE), "pt") as f:
        tensors = {m: f.get_tensor(f"{prefix}.{m}_proj.weight").to(dtype) for m in "qkvo"}
    rope = config.get("rope_parameters") or {}
    return AttentionWeights(
        **tensors,
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads", heads)),
        head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
        rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
    )


def load_role_lora(adapter_dir: Path, layer: int, *, dtype: torch.dtype = torch.float64) -> RoleLoRA:
    """A peft LoRA adapter's q/v/o pairs on one layer (scale alpha/r, or alpha/sqrt(r) rsLoRA)."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    prefix = f"base_model.model.model.layers.{layer}.self_attn"
    pairs: dict[str, LoRAPair] = {}
    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS), "pt") as f:
        keys = set(f.keys())
        if f"{prefix}.k_proj.lora_A.weight" in keys:
            raise ValueError(f"{adapter_dir.name} adapts k_proj: its keys cannot be shared")
        for m in "qvo":
            a_key = f"{prefix}.{m}_proj.lora_A.weight"
            if a_key in keys:
                pairs[m] = LoRAPair(
                    a=f.get_tensor(a_key).to(dtype),
                    b=f.get_tensor(f"{prefix}.{m}_proj.lora_B.weight").to(dtype),
                    scale=scale,
                )
    return RoleLoRA(**pairs)


##### Building blocks #####


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Llama (NeoX-style, rotate-half) rotary embedding of ``[tokens, heads, d]``."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, None, :].to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, None, :].to(x.dtype)
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _linear(x: torch.Tensor, weight: torch.Tensor, lora: LoRAPair | None) -> torch.Tensor:
    y = x @ weight.T
    return y + lora.delta(x) if lora is not None else y


def project_query(
    x: torch.Tensor, positions: torch.Tensor, w: AttentionWeights, role: RoleLoRA
) -> torch.Tensor:
    q = _linear(x, w.q, role.q).view(x.shape[0], w.num_heads, w.head_dim)
    return rotary(q, positions, w.rope_theta)


def project_kv(
    x: torch.Tensor, positions: torch.Tensor, w: AttentionWeights, role: RoleLoRA
) -> FullKV:
    """K and V of ``x`` under ``role`` (V includes the role's v_proj LoRA)."""
    t = x.shape[0]
    k = rotary((x @ w.k.T).view(t, w.num_kv_heads, w.head_dim), positions, w.rope_theta)
    v = _linear(x, w.v, role.v).view(t, w.num_kv_heads, w.head_dim)
    return FullKV(k, v, positions)


def decompose_kv(
    x: torch.Tensor, positions: torch.Tensor, w: AttentionWeights, shared_a: torch.Tensor
) -> DecomposedKV:
    """The role-independent cache content of ``x``: K, ``x·W_vᵀ`` and ``x·Aᵀ``."""
    t = x.shape[0]
    k = rotary((x @ w.k.T).view(t, w.num_kv_heads, w.head_dim), positions, w.rope_theta)
    v_base = (x @ w.v.T).view(t, w.num_kv_heads, w.head_dim)
    return DecomposedKV(k, v_base, x @ shared_a.T, positions)


def attention_probs(
    q: torch.Tensor,
    q_positions: torch.Tensor,
    k: torch.Tensor,
    k_positions: torch.Tensor,
    w: AttentionWeights,
) -> torch.Tensor:
    """Causal softmax weights ``[heads, queries, keys]``, KV heads shared by GQA groups."""
    group = w.num_heads // w.num_kv_heads
    k_per_head = k.repeat_interleave(group, dim=1)  # [keys, heads, d]
    scores = torch.einsum("qhd,khd->hqk", q, k_per_head) * w.scale
    future = k_positions[None, :] > q_positions[:, None]
    return scores.masked_fill(future[None], float("-inf")).softmax(dim=-1)


def _output(attended: torch.Tensor, w: AttentionWeights, role: RoleLoRA) -> torch.Tensor:
    """``[queries, heads, d]`` -> o_proj (with the role's o LoRA)."""
    return _linear(attended.reshape(attended.shape[0], -1), w.o, role.o)


def _apply(probs: torch.Tensor, values: torch.Tensor, w: AttentionWeights) -> torch.Tensor:
    """``P·V`` per head: ``[heads, q, k]`` x ``[keys, kv_heads, e]`` -> ``[q, heads, e]``."""
    group = w.num_heads // w.num_kv_heads
    return torch.einsum("hqk,khe->qhe", probs, values.repeat_interleave(group, dim=1))


##### The three modes #####


def per_role_attention(
    x: torch.Tensor, positions: torch.Tensor, w: AttentionWeights, role: RoleLoRA
) -> torch.Tensor:
    """Plain attention of role j over its own K and V: what non-shared computes."""
    kv = project_kv(x, positions, w, role)
    return attend_full(x, positions, kv, w, role)


def attend_full(
    x: torch.Tensor, positions: torch.Tensor, cache: FullKV, w: AttentionWeights, role: RoleLoRA
) -> torch.Tensor:
    """Role ``role``'s queries over cached K and V used as they are (full-shared)."""
    q = project_query(x, positions, w, role)
    probs = attention_probs(q, positions, cache.k, cache.positions, w)
    return _output(_apply(probs, cache.v, w), w, role)


def attend_decomposed(
    x: torch.Tensor, positions: torch.Tensor, cache: DecomposedKV, w: AttentionWeights, role: RoleLoRA
) -> torch.Tensor:
    """Role ``role``'s queries over a decomposed cache: ``P·V_base + s·(P·xA)·B_roleᵀ``.

    Raises:
        ValueError: the role has no v_proj LoRA whose A matches the cache's rank.
    """
    q = project_query(x, positions, w, role)
    probs = attention_probs(q, positions, cache.k, cache.positions, w)
    attended = _apply(probs, cache.v_base, w)
    if role.v is not None:
        attended = attended + _low_rank_values(probs, cache.xa, role.v, w)
    return _output(attended, w, role)


def _low_rank_values(
    probs: torch.Tensor, xa: torch.Tensor, v_lora: LoRAPair, w: AttentionWeights
) -> torch.Tensor:
    """``s·(P_h·xA)·B_{g(h)}ᵀ`` for every head h: ``[queries, heads, d]``."""
    if xa.shape[-1] != v_lora.b.shape[-1]:
        raise ValueError(f"cache holds x·A of rank {xa.shape[-1]}, role B has rank {v_lora.b.shape[-1]}")
    group = w.num_heads // w.num_kv_heads
    pxa = torch.einsum("hqk,kr->qhr", probs, xa)  # [q, heads, r]
    b_heads = v_lora.b.view(w.num_kv_heads, w.head_dim, -1).repeat_interleave(group, dim=0)
    return v_lora.scale * torch.einsum("qhr,hdr->qhd", pxa, b_heads)


def padded_head_size(head_dim: int, rank: int, supported: list[int]) -> int:
    """Smallest head size a kernel supports that fits ``[V_base_h | x·A]``."""
    for size in sorted(supported):
        if size >= head_dim + rank:
            return size
    raise ValueError(f"no supported head size holds {head_dim} + {rank}")


def padded_decomposed_attention(
    x: torch.Tensor,
    positions: torch.Tensor,
    cache: DecomposedKV,
    w: AttentionWeights,
    role: RoleLoRA,
    *,
    head_size: int,
) -> torch.Tensor:
    """``attend_decomposed`` through one same-size attention, as a paged kernel would run it.

    Per KV head the value row is ``[V_base_h | x·Aᵀ | 0…]`` of width ``head_size``; K and q
    are zero-padded to it and the softmax scale stays ``1/sqrt(head_dim)``, so the scores
    are unchanged and the output splits into ``P·V_base`` and ``P·(x·Aᵀ)``.
    """
    d, r = w.head_dim, cache.xa.shape[-1]
    if head_size < d + r:
        raise ValueError(f"head size {head_size} cannot hold {d} + {r}")
    keys, kv_heads = cache.k.shape[0], w.num_kv_heads
    k_pad = cache.k.new_zeros(keys, kv_heads, head_size)
    k_pad[..., :d] = cache.k
    v_pad = cache.v_base.new_zeros(keys, kv_heads, head_size)
    v_pad[..., :d] = cache.v_base
    v_pad[..., d : d + r] = cache.xa[:, None, :]
    q = project_query(x, positions, w, role)
    q_pad = q.new_zeros(q.shape[0], w.num_heads, head_size)
    q_pad[..., :d] = q
    probs = attention_probs(q_pad, positions, k_pad, cache.positions, w)
    packed = _apply(probs, v_pad, w)  # [q, heads, head_size]
    attended = packed[..., :d]
    if role.v is not None:
        group = w.num_heads // w.num_kv_heads
        b_heads = role.v.b.view(kv_heads, d, -1).repeat_interleave(group, dim=0)
        attended = attended + role.v.scale * torch.einsum("qhr,hdr->qhd", packed[..., d : d + r], b_heads)
    return _output(attended, w, role)


##### Whole model #####


LayerCache = FullKV | DecomposedKV


def _concat(past: LayerCache | None, new: LayerCache) -> LayerCache:
    if past is None:
        return new
    if isinstance(past, DecomposedKV) and isinstance(new, DecomposedKV):
        return DecomposedKV(
            torch.cat([past.k, new.k]), torch.cat([past.v_base, new.v_base]),
            torch.cat([past.xa, new.xa]), torch.cat([past.positions, new.positions]),
        )
    if isinstance(past, FullKV) and isinstance(new, FullKV):
        return FullKV(
            torch.cat([past.k, new.k]), torch.cat([past.v, new.v]),
            torch.cat([past.positions, new.positions]),
        )
    raise ValueError("a decomposed cache cannot be extended with full K/V, nor the reverse")


@dataclass(frozen=True, slots=True)
class _Layer:
    attn: AttentionWeights
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class ReferenceModel:
    """The packaged llama model in plain PyTorch, with a role's q/v/o LoRA and a
    pluggable prefix cache per layer (full K/V or decomposed), for measuring what each
    cache mode does to the reader's next-token distribution."""

    def __init__(
        self, model_dir: Path, *, dtype: torch.dtype = torch.float32, num_layers: int | None = None
    ) -> None:
        """Load the weights; ``num_layers`` keeps only the first layers (a cheaper model
        with the same per-layer mechanics, for tests)."""
        config = json.loads((model_dir / "config.json").read_text())
        self.dtype = dtype
        self.eps = float(config.get("rms_norm_eps", 1e-5))
        self.num_layers = min(num_layers or config["num_hidden_layers"], int(config["num_hidden_layers"]))
        with safe_open(str(model_dir / _MODEL_FILE), "pt") as f:
            def get(name: str) -> torch.Tensor:
                return f.get_tensor(name).to(dtype)

            self.embed = get("model.embed_tokens.weight")
            self.final_norm = get("model.norm.weight")
            self.layers = [
                _Layer(
                    attn=load_attention_weights(model_dir, i, dtype=dtype),
                    input_norm=get(f"model.layers.{i}.input_layernorm.weight"),
                    post_norm=get(f"model.layers.{i}.post_attention_layernorm.weight"),
                    gate=get(f"model.layers.{i}.mlp.gate_proj.weight"),
                    up=get(f"model.layers.{i}.mlp.up_proj.weight"),
                    down=get(f"model.layers.{i}.mlp.down_proj.weight"),
                )
                for i in range(self.num_layers)
            ]

    def load_role(self, adapter_dir: Path | None) -> list[RoleLoRA]:
        """One ``RoleLoRA`` per layer; None is the base model (no adapter)."""
        if adapter_dir is None:
            return [RoleLoRA() for _ in range(self.num_layers)]
        return [load_role_lora(adapter_dir, i, dtype=self.dtype) for i in range(self.num_layers)]

    @torch.no_grad()
    def forward(
        self,
        token_ids: list[int],
        role: list[RoleLoRA],
        *,
        past: list[LayerCache] | None = None,
        shared_a: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits of ``token_ids`` after ``past``, and the caches extended by them.

        Args:
            token_ids: tokens that follow the cached prefix.
            role: the role running this forward (its q/v/o LoRA on every layer).
            past: per-layer prefix cache, possibly written by another role. Decomposed
                caches are read as ``P·V_base + s·(P·xA)·B_role``; full ones as they are.
            shared_a: per-layer shared v_proj lora_A. Given, the new tokens' cache is
                decomposed; otherwise it is full K/V under ``role``.
        """
        start = 0 if past is None else int(past[0].positions[-1]) + 1
        positions = torch.arange(start, start + len(token_ids))
        h = self.embed[torch.tensor(token_ids)]
        caches: list[LayerCache] = []
        for i, layer in enumerate(self.layers):
            x = _rms_norm(h, layer.input_norm, self.eps)
            if shared_a is not None:
                cache = _concat(past[i] if past else None, decompose_kv(x, positions, layer.attn, shared_a[i]))
            else:
                cache = _concat(past[i] if past else None, project_kv(x, positions, layer.attn, role[i]))
            if isinstance(cache, DecomposedKV):
                h = h + attend_decomposed(x, positions, cache, layer.attn, role[i])
            else:
                h = h + attend_full(x, positions, cache, layer.attn, role[i])
            y = _rms_norm(h, layer.post_norm, self.eps)
            h = h + (torch.nn.functional.silu(y @ layer.gate.T) * (y @ layer.up.T)) @ layer.down.T
            caches.append(cache)
        return _rms_norm(h, self.final_norm, self.eps) @ self.embed.T, caches
