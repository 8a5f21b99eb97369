"""The grouped LoRA ops give vLLM's own results (vllm.lora.ops.torch_ops) on every shape
and index pattern the CPU punica wrapper passes them.

One deliberate difference: a token of slot -1 ("no adapter") gets no delta. vLLM's torch
ops index the stacked weights with -1 and so apply the *last* slot's adapter to base-model
tokens of a mixed batch; its GPU kernels skip them. The reference here is the stock op on
weights with one zero slot appended, which is what -1 then selects.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from vllm.lora.ops import torch_ops as stock
from vllm.lora.punica_wrapper.utils import compute_meta

from agentstack.vllm_ext import grouped_lora as grouped

SLOTS = 4
PATTERNS = {
    "one adapter": [0] * 9,
    "interleaved roles": [0, 1, 2, 0, 1, 2, 0, 1, 3],
    "runs": [1, 1, 1, 2, 2, 0, 0, 0, 0],
    "with base tokens": [2, -1, -1, 0, 2, -1, 3, 3, 1],
    "base only": [-1] * 9,
    "single token": [3],
    "last slot": [3, 3, 3, 3],
    "decode step of three roles": [0, 1, 2] * 13 + [-1],
    # Past the all-slots product's token limit: one product per adapter.
    "long prefill of three roles": [0] * 40 + [2] * 30 + [-1] * 10 + [0] * 25 + [1] * 20,
    "long decode of three roles": [0, 1, 2] * 30,
}
assert max(len(p) for p in PATTERNS.values()) > grouped.DENSE_MAX_TOKENS


def _with_zero_slot(weights: torch.Tensor) -> torch.Tensor:
    return torch.cat([weights, torch.zeros_like(weights[:1])])


def _stock_indices(indices: torch.Tensor) -> torch.Tensor:
    return torch.where(indices < 0, SLOTS, indices)


def _weights(shape: tuple[int, ...], dtype: torch.dtype, *, dead_slot: int | None = 1,
             four_d: bool = True) -> torch.Tensor:
    w = torch.randn((SLOTS, 1, *shape) if four_d else (SLOTS, *shape), dtype=dtype) / 4
    if dead_slot is not None:
        w[dead_slot] = 0  # a slot whose adapter does not touch this module
    return w


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit for bit: greedy generations must not change when the ops do."""
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
    a = _weights((rank, 96), dtype)
    for op in ("bgmv", "sgmv"):
        expected = torch.full((len(indices), rank + 3), 7.0)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_shrink(x, _with_zero_slot(a), expected, _stock_indices(indices), 0.5)
            grouped.bgmv_shrink(x, a, actual, indices, 0.5)
        else:
            stock.sgmv_shrink(x, _with_zero_slot(a), expected, *_segments(_stock_indices(indices)), 0.5)
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
    b = _weights((40, rank), dtype)
    for op in ("bgmv", "sgmv"):
        expected = torch.randn(len(indices), 100).to(dtype)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_expand_slice(buffer, _with_zero_slot(b), expected, _stock_indices(indices), 30, 40, add_inputs)
            grouped.bgmv_expand_slice(buffer, b, actual, indices, 30, 40, add_inputs)
        else:
            stock.sgmv_expand_slice(buffer, _with_zero_slot(b), expected, *_segments(_stock_indices(indices)),
                                    30, 40, add_inputs)
            grouped.sgmv_expand_slice(buffer, b, actual, *_segments(indices), 30, 40, add_inputs)
        _assert_same(actual, expected)
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
    b = _weights((64, 16), torch.bfloat16, four_d=four_d)
    for op in ("bgmv", "sgmv"):
        expected = torch.randn(len(indices), out_width).to(torch.bfloat16)
        actual = expected.clone()
        if op == "bgmv":
            stock.bgmv_expand(buffer, _with_zero_slot(b), expected, _stock_indices(indices), add_inputs)
            grouped.bgmv_expand(buffer, b, actual, indices, add_inputs)
        else:
            stock.sgmv_expand(buffer, _with_zero_slot(b), expected, *_segments(_stock_indices(indices)), add_inputs)
            grouped.sgmv_expand(buffer, b, actual, *_segments(indices), add_inputs)
        _assert_same(actual, expected)


def test_one_row_of_deltas_broadcasts_like_vllm() -> None:
    torch.manual_seed(3)
    buffer = torch.randn(1, 16)
    b = _weights((64, 16), torch.bfloat16, dead_slot=None)
    expected = torch.zeros(5, 64, dtype=torch.bfloat16)
    actual = expected.clone()
    stock.bgmv_expand(buffer, b, expected, torch.tensor([2]), True)
    grouped.bgmv_expand(buffer, b, actual, torch.tensor([2]), True)
    _assert_same(actual, expected)


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


def _stock_add_lora_linear(wrapper: Any, y: torch.Tensor, x: torch.Tensor, a: tuple[torch.Tensor, ...],
                           b: tuple[torch.Tensor, ...], scale: float, widths: tuple[int, ...]) -> None:
    """vLLM's own ``add_lora_linear`` for the wrapper's current mapping, with tokens of slot
    -1 pointed at an appended zero slot (see the module docstring). Rewrites the wrapper's
    indices: call ``update_metadata`` again before using the wrapper for anything else."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    indices = wrapper._token_lora_indices
    indices.copy_(torch.where(indices < 0, SLOTS, indices))
    if wrapper.is_prefill:
        wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    PunicaWrapperCPU.__dict__["add_lora_linear"](
        wrapper, y, x, tuple(_with_zero_slot(w) for w in a), tuple(_with_zero_slot(w) for w in b),
        scale, widths)


@pytest.mark.parametrize("pattern", ["interleaved roles", "with base tokens", "long prefill of three roles",
                                     "decode step of three roles", "long decode of three roles", "base only",
                                     "one adapter", "last slot"])
@pytest.mark.parametrize("is_prefill", [True, False], ids=["prefill", "decode"])
@pytest.mark.parametrize("variant", ["q/v/o", "v only in one adapter", "all slices", "scaled", "float16"])
def test_wrapper_add_lora_linear_matches_vllm(pattern: str, is_prefill: bool, variant: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole projection (q/k/v slices, k without weights as a q/v/o adapter leaves it,
    or all three live) through vLLM's CPU punica wrapper, stock and grouped: one shrink and
    one block-diagonal expand per adapter on long steps, one fused shrink and expand for
    all adapters on small ones."""
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    torch.manual_seed(4)
    slots = PATTERNS[pattern]
    # vLLM maps requests to adapter ids, then ids to slots; slot i here holds adapter id i + 1.
    mapping = LoRAMapping([s + 1 if s >= 0 else 0 for s in slots], [0], is_prefill=is_prefill)
    wrapper = PunicaWrapperCPU(256, 256, device="cpu")
    wrapper.update_metadata(mapping, [1, 2, 3, 4], SLOTS, 1000)
    dtype = torch.float16 if variant == "float16" else torch.bfloat16
    scale = 0.5 if variant == "scaled" else 1.0
    x = torch.randn(len(slots), 96, dtype=dtype)
    widths = (64, 32, 32)
    a = tuple(_weights((16, 96), dtype, dead_slot=None) for _ in widths)
    b = tuple(_weights((w, 16), dtype, dead_slot=None) for w in widths)
    if variant != "all slices":
        a[1].zero_(), b[1].zero_()  # k: no adapter touches it
    if variant == "v only in one adapter":
        a[0][2].zero_(), b[0][2].zero_()
    expected = torch.randn(len(slots), sum(widths)).to(dtype)
    actual = expected.clone()
    _stock_add_lora_linear(wrapper, expected, x, a, b, scale, widths)
    wrapper.update_metadata(mapping, [1, 2, 3, 4], SLOTS, 1000)
    fused_calls = []
    fused_apply = grouped.FusedProjection.apply
    monkeypatch.setattr(grouped.FusedProjection, "apply",
                        lambda self, *args: (fused_calls.append(1), fused_apply(self, *args))[1])
    for _ in range(2):  # the second step reuses the cached (fused) products
        step = actual.clone()
        grouped.add_lora_linear(wrapper, step, x, a, b, scale, widths)
        _assert_same(step, expected)
    small = len(slots) <= grouped.DENSE_MAX_TOKENS and any(s >= 0 for s in slots)
    assert len(fused_calls) == (2 if small else 0)


def test_wrapper_follows_a_new_batch_mapping() -> None:
    """The step's token plan is kept on the wrapper between ops; when vLLM maps the batch
    to other adapters (same token count), the next op uses the new mapping."""
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    torch.manual_seed(5)
    widths = (64, 32, 32)
    a = tuple(_weights((16, 96), torch.bfloat16, dead_slot=None) for _ in widths)
    b = tuple(_weights((w, 16), torch.bfloat16, dead_slot=None) for w in widths)
    x = torch.randn(6, 96, dtype=torch.bfloat16)
    y = torch.randn(6, sum(widths)).to(torch.bfloat16)
    wrapper = PunicaWrapperCPU(256, 256, device="cpu")
    outputs = []
    for slots in ([0, 1, 2, 0, 1, 2], [2, 2, 1, 1, -1, 0]):
        wrapper.update_metadata(LoRAMapping([s + 1 for s in slots], [0], is_prefill=True),
                                [1, 2, 3, 4], SLOTS, 1000)
        step = y.clone()
        grouped.add_lora_linear(wrapper, step, x, a, b, 1.0, widths)
        outputs.append(step)
    expected = y.clone()
    _stock_add_lora_linear(wrapper, expected, x, a, b, 1.0, widths)
    _assert_same(outputs[1], expected)
    assert not torch.equal(outputs[0], outputs[1])
