"""Adapter-slot patterns and stacked weights that the LoRA op tests share.

One deliberate difference from vLLM's torch ops: a token of slot -1 ("no adapter") gets
no delta. vLLM's torch ops index the stacked weights with -1 and so apply the *last*
slot's adapter to base-model tokens of a mixed batch; its GPU kernels skip them. The
reference is the stock op on weights with one zero slot appended, which is what -1 then
selects.
"""

from __future__ import annotations

import torch

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


def with_zero_slot(weights: torch.Tensor) -> torch.Tensor:
    return torch.cat([weights, torch.zeros_like(weights[:1])])


def stock_indices(indices: torch.Tensor) -> torch.Tensor:
    return torch.where(indices < 0, SLOTS, indices)


def stacked_weights(shape: tuple[int, ...], dtype: torch.dtype, *, dead_slot: int | None = 1,
                    four_d: bool = True) -> torch.Tensor:
    w = torch.randn((SLOTS, 1, *shape) if four_d else (SLOTS, *shape), dtype=dtype) / 4
    if dead_slot is not None:
        w[dead_slot] = 0  # a slot whose adapter does not touch this module
    return w


def assert_close_as_vllm(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """vLLM's punica kernel tests compare 16-bit results with rtol = atol = 6e-2 (float32:
    1e-2); a wrong adapter, slice or row is off by the size of the deltas (~1 here), far
    outside it."""
    tolerance = 1e-2 if actual.dtype == torch.float32 else 6e-2
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
