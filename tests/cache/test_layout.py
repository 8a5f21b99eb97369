"""Block layout: bytes per token for the served model, and a lossless binary form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cache.layout import BlockFormatError, BlockLayout, ModelShape, decode_block, encode_block
from cache.modes import CacheMode
from tests.cache.conftest import make_block


def test_packaged_model_bytes_per_token(model_dir: Path) -> None:
    shape = ModelShape.from_model_dir(model_dir)
    assert (shape.num_layers, shape.num_kv_heads, shape.head_dim, shape.dtype) == (30, 3, 64, torch.bfloat16)
    ordinary = BlockLayout(shape, CacheMode.NON_SHARED)
    decomposed = BlockLayout(shape, CacheMode.DECOMPOSED, rank=8)
    # 30 layers x (K + V: 2 x 3 heads x 64) x 2 bytes.
    assert ordinary.bytes_per_token() == 23_040
    # Plus x·A, 8 numbers per layer.
    assert decomposed.bytes_per_token() == 23_520
    # Three roles reading one context: vLLM holds three copies, decomposed one.
    assert ordinary.bytes_per_context_token(3) == 69_120
    assert decomposed.bytes_per_context_token(3) == 23_520
    assert decomposed.ratio_to_non_shared(3) == pytest.approx(0.3403, abs=1e-4)
    assert BlockLayout(shape, CacheMode.FULL_SHARED).ratio_to_non_shared(3) == pytest.approx(1 / 3)


def test_decomposed_layout_needs_a_rank() -> None:
    shape = ModelShape(num_layers=1, num_kv_heads=1, head_dim=4, hidden_size=4)
    with pytest.raises(ValueError, match="rank"):
        BlockLayout(shape, CacheMode.DECOMPOSED)


@pytest.mark.parametrize("mode", list(CacheMode))
def test_blocks_round_trip_bit_exact(mode: CacheMode) -> None:
    block = make_block(mode, writer="shout", seed=3)
    again = decode_block(encode_block(block))
    assert type(again) is type(block) and again.writer == "shout"
    for name, tensor in block.tensors().items():
        restored = again.tensors()[name]
        assert restored.dtype == tensor.dtype and torch.equal(restored, tensor)


def test_encoded_size_is_payload_plus_small_header() -> None:
    block = make_block(CacheMode.DECOMPOSED, writer="a")
    payload = sum(t.numel() * t.element_size() for t in block.tensors().values())
    assert payload < len(encode_block(block)) < payload + 256


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:-3], lambda b: b"XXXX" + b[4:], lambda b: b + b"\x00", lambda b: b[:10]],
    ids=["truncated", "bad-magic", "trailing", "header-cut"],
)
def test_damaged_bytes_are_rejected(damage) -> None:  # type: ignore[no-untyped-def]
    data = encode_block(make_block(CacheMode.FULL_SHARED, writer="a"))
    with pytest.raises(BlockFormatError):
        decode_block(damage(data))
