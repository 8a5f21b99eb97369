"""A projection's LoRA through vLLM's CPU punica wrapper (``add_lora_linear``), stock
against prepacked GEMMs: the same values up to fp32 summation order inside the GEMM, at
the tolerances of vLLM's own punica kernel tests, on every slot pattern, both step
kinds, and when the batch's mapping changes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from agentstack.vllm_ext import grouped_lora as grouped
from agentstack.vllm_ext import projection_lora
from tests.vllm_ext.lora_cases import PATTERNS, SLOTS, assert_close_as_vllm, stacked_weights, with_zero_slot

WIDTHS = (64, 32, 32)
"""q, k, v of one projection."""


def _wrapper(slots: list[int], is_prefill: bool) -> Any:
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    wrapper = PunicaWrapperCPU(256, 256, device="cpu")
    _map(wrapper, slots, is_prefill)
    return wrapper


def _map(wrapper: Any, slots: list[int], is_prefill: bool) -> None:
    from vllm.lora.layers.utils import LoRAMapping

    # vLLM maps requests to adapter ids, then ids to slots; slot i here holds adapter id i + 1.
    mapping = LoRAMapping([s + 1 if s >= 0 else 0 for s in slots], [0], is_prefill=is_prefill)
    wrapper.update_metadata(mapping, [1, 2, 3, 4], SLOTS, 1000)


def _stock_add_lora_linear(wrapper: Any, y: torch.Tensor, x: torch.Tensor, a: tuple[torch.Tensor, ...],
                           b: tuple[torch.Tensor, ...], scale: float) -> None:
    """vLLM's own ``add_lora_linear`` for the wrapper's current mapping, with tokens of slot
    -1 pointed at an appended zero slot (``lora_cases``). Rewrites the wrapper's indices:
    map it again before using it for anything else."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    indices = wrapper._token_lora_indices
    indices.copy_(torch.where(indices < 0, SLOTS, indices))
    if wrapper.is_prefill:
        wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    PunicaWrapperCPU.__dict__["add_lora_linear"](
        wrapper, y, x, tuple(with_zero_slot(w) for w in a), tuple(with_zero_slot(w) for w in b), scale, WIDTHS)


def _projection(dtype: torch.dtype) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    a = tuple(stacked_weights((16, 96), dtype, dead_slot=None) for _ in WIDTHS)
    b = tuple(stacked_weights((w, 16), dtype, dead_slot=None) for w in WIDTHS)
    return a, b


@pytest.mark.parametrize("pattern", ["interleaved roles", "with base tokens", "long prefill of three roles",
                                     "decode step of three roles", "long decode of three roles", "base only",
                                     "one adapter", "last slot"])
@pytest.mark.parametrize("is_prefill", [True, False], ids=["prefill", "decode"])
@pytest.mark.parametrize("variant", ["q/v/o", "v only in one adapter", "all slices", "scaled", "float16",
                                     "float32"])
def test_add_lora_linear_matches_vllm(pattern: str, is_prefill: bool, variant: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole projection (q/k/v slices, k without weights as a q/v/o adapter leaves it,
    or all three live): one fused shrink and expand for every adapter on small steps, one
    per adapter on long ones, vLLM's per-slice ops (bit for bit) for a float32 model."""
    torch.manual_seed(4)
    slots = PATTERNS[pattern]
    wrapper = _wrapper(slots, is_prefill)
    dtype = {"float16": torch.float16, "float32": torch.float32}.get(variant, torch.bfloat16)
    scale = 0.5 if variant == "scaled" else 1.0
    x = torch.randn(len(slots), 96, dtype=dtype)
    a, b = _projection(dtype)
    if variant != "all slices":
        a[1].zero_(), b[1].zero_()  # k: no adapter touches it
    if variant == "v only in one adapter":
        a[0][2].zero_(), b[0][2].zero_()
    expected = torch.randn(len(slots), sum(WIDTHS)).to(dtype)
    actual = expected.clone()
    _stock_add_lora_linear(wrapper, expected, x, a, b, scale)
    _map(wrapper, slots, is_prefill)
    fused_calls = []
    apply_fused = projection_lora.LiveProjection.apply_fused
    monkeypatch.setattr(projection_lora.LiveProjection, "apply_fused",
                        lambda self, *args: (fused_calls.append(1), apply_fused(self, *args))[1])
    for _ in range(2):  # the second step reuses the cached products
        step = actual.clone()
        projection_lora.add_lora_linear(wrapper, step, x, a, b, scale, WIDTHS)
        if dtype == torch.float32:
            assert torch.equal(step, expected), (step - expected).abs().max()
        else:
            assert_close_as_vllm(step, expected)
    small = len(slots) <= grouped.DENSE_MAX_TOKENS and any(s >= 0 for s in slots) and dtype != torch.float32
    assert len(fused_calls) == (2 if small else 0)


@pytest.mark.parametrize("is_prefill", [True, False], ids=["prefill", "decode"])
def test_follows_a_new_batch_mapping(is_prefill: bool) -> None:
    """The step's token plan and the packed products are kept between steps; when vLLM
    maps the batch to other adapters (same token count), the next step uses the new
    mapping."""
    torch.manual_seed(5)
    a, b = _projection(torch.bfloat16)
    x = torch.randn(6, 96, dtype=torch.bfloat16)
    y = torch.randn(6, sum(WIDTHS)).to(torch.bfloat16)
    wrapper = _wrapper([0, 1, 2, 0, 1, 2], is_prefill)
    outputs = []
    for slots in ([0, 1, 2, 0, 1, 2], [2, 2, 1, 1, -1, 0]):
        _map(wrapper, slots, is_prefill)
        step = y.clone()
        projection_lora.add_lora_linear(wrapper, step, x, a, b, 1.0, WIDTHS)
        outputs.append(step)
    expected = y.clone()
    _stock_add_lora_linear(wrapper, expected, x, a, b, 1.0)
    assert_close_as_vllm(outputs[1], expected)
    assert not torch.equal(outputs[0], outputs[1])


def test_an_adapter_loaded_into_a_slot_is_seen() -> None:
    """vLLM loads an adapter by writing its slot in place: packed products of the slot's
    previous weights must not be used again."""
    torch.manual_seed(6)
    a, b = _projection(torch.bfloat16)
    x = torch.randn(4, 96, dtype=torch.bfloat16)
    y = torch.zeros(4, sum(WIDTHS), dtype=torch.bfloat16)
    wrapper = _wrapper([1, 1, 2, 2], False)
    projection_lora.add_lora_linear(wrapper, y.clone(), x, a, b, 1.0, WIDTHS)
    for w in (*a, *b):
        w[1].copy_(torch.randn_like(w[1]) / 4)
    actual = y.clone()
    projection_lora.add_lora_linear(wrapper, actual, x, a, b, 1.0, WIDTHS)
    expected = y.clone()
    _stock_add_lora_linear(wrapper, expected, x, a, b, 1.0)
    assert_close_as_vllm(actual, expected)
