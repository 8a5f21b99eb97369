"""The grouped LoRA ops give vLLM's own results (vllm.lora.ops.torch_ops) on every shape and
index pattern the CPU punica wrapper passes them (see ``lora_cases`` for the one deliberate
difference: tokens without an adapter get no delta): the shrink bit for bit (it runs the
stock op's kernel), the expand within vLLM's own kernel tolerance (the stock op's bf16
einsum and the fp32 product here may round a sum differently in the last bit)."""

from __future__ import annotations

import itertools

import pytest
import torch
from vllm.lora.ops import torch_ops as stock
from vllm.lora.punica_wrapper.utils import compute_meta

from agentstack.vllm_ext import grouped_lora as grouped
from tests.vllm_ext.lora_cases import (
    PATTERNS,
    SLOTS,
    assert_close_as_vllm,
    stacked_weights,
    stock_indices,
    with_zero_slot,
)


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(actual, expected), (actual - expected).abs().max()


def _segments(indices: torch.Tensor) -> tuple:
    start, lens, slots, batches, max_len, tokens, _ = compute_meta(indices)
    return start, lens, slots, batches, max_len, tokens


CASES = list(itertools.product(PATTERNS, [torch.bfloat16, torch.float16, torch.float32], [8, 16]))


@pytest.mark.parametrize(("pattern", "dtype", "rank"), CASES)
def test_shrink_matches_vllm(pattern: str, dtype: torch.dtype, rank: int) -> None:
    torch.manual_seed(0)
    indices = torch.tensor(PATTERNS[pattern])
    x = torch.randn(len(indices), 96, dtype=dtype)
    x_before = x.clone()
    a = stacked_weights((rank, 96), dtype)
    for op in ("bgmv", "sgmv"):
        expected = torch.full((len(indices), rank + 3), 7.0)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_shrink(x, with_zero_slot(a), expected, stock_indices(indices), 0.5)
            grouped.bgmv_shrink(x, a, actual, indices, 0.5)
        else:
            stock.sgmv_shrink(x, with_zero_slot(a), expected, *_segments(stock_indices(indices)), 0.5)
            grouped.sgmv_shrink(x, a, actual, *_segments(indices), 0.5)
        _assert_same(actual, expected)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize(("pattern", "dtype", "rank"), CASES)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_slice_matches_vllm(pattern: str, dtype: torch.dtype, rank: int, add_inputs: bool) -> None:
    torch.manual_seed(1)
    indices = torch.tensor(PATTERNS[pattern])
    buffer = torch.randn(len(indices), rank)
    buffer_before = buffer.clone()
    b = stacked_weights((40, rank), dtype)
    for op in ("bgmv", "sgmv"):
        expected = torch.randn(len(indices), 100).to(dtype)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_expand_slice(buffer, with_zero_slot(b), expected, stock_indices(indices), 30, 40, add_inputs)
            grouped.bgmv_expand_slice(buffer, b, actual, indices, 30, 40, add_inputs)
        else:
            stock.sgmv_expand_slice(buffer, with_zero_slot(b), expected, *_segments(stock_indices(indices)),
                                    30, 40, add_inputs)
            grouped.sgmv_expand_slice(buffer, b, actual, *_segments(indices), 30, 40, add_inputs)
        assert_close_as_vllm(actual, expected)
    assert torch.equal(buffer, buffer_before)


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("out_width", [64, 50, 80], ids=["same", "output narrower", "output wider"])
@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("four_d", [True, False], ids=["4d", "3d"])
def test_expand_matches_vllm(pattern: str, out_width: int, add_inputs: bool, four_d: bool) -> None:
    """Plain expand pads nothing: the adapter and the model may disagree on the output width."""
    torch.manual_seed(2)
    indices = torch.tensor(PATTERNS[pattern])
    buffer = torch.randn(len(indices), 16)
    b = stacked_weights((64, 16), torch.bfloat16, four_d=four_d)
    for op in ("bgmv", "sgmv"):
        expected = torch.randn(len(indices), out_width).to(torch.bfloat16)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_expand(buffer, with_zero_slot(b), expected, stock_indices(indices), add_inputs)
            grouped.bgmv_expand(buffer, b, actual, indices, add_inputs)
        else:
            stock.sgmv_expand(buffer, with_zero_slot(b), expected, *_segments(stock_indices(indices)), add_inputs)
            grouped.sgmv_expand(buffer, b, actual, *_segments(indices), add_inputs)
        assert_close_as_vllm(actual, expected)


def test_one_row_of_deltas_broadcasts_like_vllm() -> None:
    torch.manual_seed(3)
    buffer = torch.randn(1, 16)
    b = stacked_weights((64, 16), torch.bfloat16, dead_slot=None)
    expected = torch.zeros(5, 64, dtype=torch.bfloat16)
    actual = expected.clone()
    stock.bgmv_expand(buffer, b, expected, torch.tensor([2]), True)
    grouped.bgmv_expand(buffer, b, actual, torch.tensor([2]), True)
    assert_close_as_vllm(actual, expected)


def test_weights_rewritten_in_place_are_seen() -> None:
    """vLLM loads an adapter by writing its slot in place; a slot that was all zeros (and so
    skipped) must count once it holds weights."""
    x = torch.randn(3, 32)
    a = torch.zeros(SLOTS, 1, 8, 32)
    out = torch.zeros(3, 8)
    grouped.bgmv_shrink(x, a, out, torch.tensor([1, 1, 1]), 1.0)
    assert out.abs().sum() == 0
    a[1, 0].copy_(torch.randn(8, 32))
    grouped.bgmv_shrink(x, a, out, torch.tensor([1, 1, 1]), 1.0)
    torch.testing.assert_close(out, x @ a[1, 0].t())
    a[1] = 0  # evicted
    grouped.bgmv_shrink(x, a, out, torch.tensor([1, 1, 1]), 1.0)
    assert out.abs().sum() == 0
