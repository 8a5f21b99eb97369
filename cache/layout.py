"""What one cached block holds, what it costs per token, and its binary form.

A block covers ``block_size`` consecutive prompt tokens in every layer. Its content depends
on the cache mode (see ``cache.modes``):

- ``KVBlock`` (non-shared, full-shared): K and V per layer, head and token, as vLLM keeps
  them. Under non-shared every role holds its own copy.
- ``DecomposedBlock``: K, ``V_base = x·W_v`` and ``x·A`` (rank r, A shared by all roles).
  All three are role-independent, so one copy serves every role; a role rebuilds its
  V as ``V_base + s·(x·A)·B_role`` at attention time (LRAgent).

Per token and layer that is ``2·kv_heads·head_dim`` numbers for an ordinary block and
``2·kv_heads·head_dim + r`` for a decomposed one: with k roles reading one context, the
decomposed cache holds ``(2·h·d + r) / (k·2·h·d)`` of what non-shared holds.

The binary form is a length-prefixed JSON header (kind, writer, tensor names, dtypes,
shapes) followed by raw little-endian tensor bytes. No pickle: values come back from a
shared Redis and must never execute code when read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cache.modes import CacheMode

_HEADER = struct.Struct("<4sI")
_MAGIC = b"ASKV"
_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class BlockFormatError(ValueError):
    """Bytes that are not a block this version wrote (corrupt, truncated, foreign)."""


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.removeprefix("torch.")]
    except KeyError as e:
        raise ValueError(f"unsupported cache dtype {name!r}; use one of {sorted(_DTYPES)}") from e


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The attention dimensions that size a KV cache."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    dtype: torch.dtype = torch.bfloat16

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Read a Hugging Face ``config.json`` (llama-style attention)."""
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            num_layers=int(config["num_hidden_layers"]),
            num_kv_heads=int(config.get("num_key_value_heads", heads)),
            head_dim=int(config.get("head_dim") or hidden // heads),
            hidden_size=hidden,
            dtype=dtype_from_name(str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")),
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ModelShape:
        return cls.from_hf_config(json.loads((model_dir / "config.json").read_text()))

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V) per token and layer, all KV heads together."""
        return self.num_kv_heads * self.head_dim

    @property
    def element_bytes(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True, slots=True)
class BlockLayout:
    """The tensors a block of one mode holds, and their size."""

    shape: ModelShape
    mode: CacheMode
    rank: int = 0

    def __post_init__(self) -> None:
        if self.mode.stores_low_rank and self.rank < 1:
            raise ValueError("the decomposed layout needs the rank of the shared v_proj lora_A")

    def numbers_per_token_layer(self) -> int:
        """K plus V (or V_base plus x·A) per token in one layer."""
        extra = self.rank if self.mode.stores_low_rank else 0
        return 2 * self.shape.kv_dim + extra

    def bytes_per_token(self) -> int:
        """Bytes one cached copy of one token costs, over all layers."""
        return self.shape.num_layers * self.numbers_per_token_layer() * self.shape.element_bytes

    def bytes_per_block(self, block_size: int) -> int:
        return self.bytes_per_token() * block_size

    def bytes_per_context_token(self, num_roles: int) -> int:
        """Bytes held per context token when ``num_roles`` roles have all read that context."""
        copies = num_roles if self.mode.keyed_by_adapter else 1
        return copies * self.bytes_per_token()

    def ratio_to_non_shared(self, num_roles: int) -> float:
        """This layout's memory per context token over vLLM's per-adapter copies."""
        ordinary = BlockLayout(self.shape, CacheMode.NON_SHARED)
        return self.bytes_per_context_token(num_roles) / ordinary.bytes_per_context_token(num_roles)


@dataclass(slots=True)
class KVBlock:
    """K and V of ``num_tokens`` tokens as one role computed them (non-shared, full-shared)."""

    k: torch.Tensor
    """``[layers, tokens, kv_heads, head_dim]``, after rotary embedding."""
    v: torch.Tensor
    """``[layers, tokens, kv_heads, head_dim]``, including the writer's v_proj LoRA."""
    writer: str
    """The role whose forward pass produced the block (for cross-role reuse accounting)."""

    @property
    def num_tokens(self) -> int:
        return int(self.k.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"k": self.k, "v": self.v}


@dataclass(slots=True)
class DecomposedBlock:
    """Role-independent K, V_base and x·A of ``num_tokens`` tokens (decomposed)."""

    k: torch.Tensor
    """``[layers, tokens, kv_heads, head_dim]``, after rotary embedding. Served blocks keep
    K as the decomposed model pages it (zero-padded heads, in the kernel's layout)."""
    v_base: torch.Tensor
    """``[layers, tokens, kv_heads, head_dim]``: ``x·W_v`` without any adapter."""
    xa: torch.Tensor
    """``[layers, tokens, rank]``: ``x·A`` with the v_proj lora_A every role shares."""
    writer: str
    """The role whose forward pass produced the hidden states x."""

    @property
    def num_tokens(self) -> int:
        return int(self.k.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"k": self.k, "v_base": self.v_base, "xa": self.xa}


Block = KVBlock | DecomposedBlock
_KINDS: dict[str, type[KVBlock] | type[DecomposedBlock]] = {
    "kv": KVBlock,
    "decomposed": DecomposedBlock,
}


def encode_block(block: Block) -> bytes:
    """The block's binary form: header, then each tensor's raw bytes in header order."""
    kind = "decomposed" if isinstance(block, DecomposedBlock) else "kv"
    tensors = {name: t.detach().contiguous().cpu() for name, t in block.tensors().items()}
    header = json.dumps(
        {
            "kind": kind,
            "writer": block.writer,
            "tensors": [
                [name, str(t.dtype).removeprefix("torch."), list(t.shape)]
                for name, t in tensors.items()
            ],
        },
        separators=(",", ":"),
    ).encode()
    payload = b"".join(t.view(torch.uint8).numpy().tobytes() for t in tensors.values())
    return _HEADER.pack(_MAGIC, len(header)) + header + payload


def decode_block(data: bytes) -> Block:
    """Rebuild a block from ``encode_block`` output.

    Raises:
        BlockFormatError: the bytes are not a complete block of a known kind.
    """
    try:
        magic, header_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise BlockFormatError("not a cache block (bad magic)")
        start = _HEADER.size + header_len
        header = json.loads(data[_HEADER.size : start])
        cls = _KINDS[header["kind"]]
        buffer = bytearray(data[start:])
        tensors: dict[str, torch.Tensor] = {}
        offset = 0
        for name, dtype_name, shape in header["tensors"]:
            dtype = dtype_from_name(dtype_name)
            count = 1
            for dim in shape:
                count *= int(dim)
            size = count * torch.empty((), dtype=dtype).element_size()
            if offset + size > len(buffer):
                raise BlockFormatError("truncated cache block")
            raw = torch.frombuffer(buffer, dtype=torch.uint8, count=size, offset=offset)
            tensors[name] = raw.view(dtype).reshape(shape)
            offset += size
        if offset != len(buffer):
            raise BlockFormatError("trailing bytes after cache block")
        return cls(writer=str(header["writer"]), **tensors)
    except BlockFormatError:
        raise
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise BlockFormatError(f"unreadable cache block: {e}") from e
