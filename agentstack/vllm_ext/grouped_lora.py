"""Grouped LoRA ops for vLLM's CPU engine: one matrix product per adapter, not per token.

vLLM's torch ops (``vllm/lora/ops/torch_ops``) index the stacked adapter weights with one
adapter slot per token (``lora_b_weights[indices]``), which copies a ``[tokens, out, in]``
tensor for every LoRA'd projection of every layer, then multiply with an einsum. That
makes a 1,000-token prefill with a role adapter about 16x slower than the base model.

These functions keep the six ops' signatures and results, but compute, for each adapter,
one product over the tokens that use it: prefill segments (SGMV) become views of the
input, and decode tokens (BGMV) are grouped by slot. Dtypes follow the stock ops (shrink
in the fp32 buffer's dtype, expand in the output's), and tokens of slot -1 ("no adapter")
get no delta, as in vLLM's GPU kernels.

Adapter slots whose weights are all zero are skipped: vLLM wraps every projection a
model supports, so an adapter of q/v/o still pays for k, gate_up and down, and the stock
ops multiply those zeros. Which slots hold weights, and the weights in fp32 (converted
once rather than in every op), are cached per stacked-weight tensor and its
version counter, which every in-place write bumps (vLLM writes a slot in place when it
loads or evicts an adapter), so a stale answer is never read.

A step's token grouping is computed once and shared by all its ops, and kept while vLLM
rewrites its index buffers with the same slots (every decode step of an unchanged batch).
``projection_lora`` builds vLLM's ``add_lora_linear`` of a 16-bit model on these plans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

NO_ADAPTER = -1
MAX_RUN_ADDS = 8
"""Up to this many runs of rows an adapter's deltas are added run by run (contiguous adds);
more (tokens of many requests interleaved one by one) take one index_add."""

DENSE_MAX_TOKENS = 64
"""Up to this many tokens, several adapters' deltas come from one product over all slots
(the extra FLOPs are negligible; the saved per-op overhead is not)."""


@dataclass(frozen=True, slots=True)
class TokenGroup:
    """The rows of one adapter slot: a contiguous slice, or an index tensor when scattered,
    and the runs of consecutive rows they make (in order)."""

    slot: int
    rows: slice | torch.Tensor
    runs: tuple[slice, ...]


@dataclass(slots=True)
class TokenPlan:
    """How one step's tokens map to adapter slots, as every op of the step needs it."""

    tokens: int
    groups: list[TokenGroup]
    token_slots: list[int]
    _columns: dict[int, torch.Tensor] = field(default_factory=dict)
    _valid: torch.Tensor | None = None

    @property
    def has_base_tokens(self) -> bool:
        return any(g.slot == NO_ADAPTER for g in self.groups)

    def columns(self, rank: int) -> torch.Tensor:
        """``[tokens, rank]`` column indices of each token's slot in an all-slots product."""
        if rank not in self._columns:
            slots = torch.tensor([max(s, 0) for s in self.token_slots], dtype=torch.long)
            self._columns[rank] = slots[:, None] * rank + torch.arange(rank)
        return self._columns[rank]

    def valid(self) -> torch.Tensor:
        """``[tokens, 1]``: 1 for tokens with an adapter, 0 for base-model tokens."""
        if self._valid is None:
            self._valid = torch.tensor([[float(s != NO_ADAPTER)] for s in self.token_slots])
        return self._valid


def plan_from_token_slots(token_slots: list[int]) -> TokenPlan:
    """Group tokens by adapter slot (BGMV: one slot per token, in any order)."""
    rows_of: dict[int, list[int]] = {}
    for row, slot in enumerate(token_slots):
        rows_of.setdefault(slot, []).append(row)
    groups = [TokenGroup(slot, _rows(rows), _runs(rows)) for slot, rows in rows_of.items()]
    return TokenPlan(len(token_slots), groups, token_slots)


def plan_from_segments(seq_lens: list[int], segment_slots: list[int]) -> TokenPlan:
    """Group tokens by adapter slot from runs of consecutive tokens (SGMV).

    A slot with one run is a view of the input; a slot with several runs (requests of
    different roles interleaved) becomes one gathered product, not one per run."""
    token_slots = [slot for length, slot in zip(seq_lens, segment_slots) for _ in range(length)]
    return plan_from_token_slots(token_slots)


def _runs(rows: list[int]) -> tuple[slice, ...]:
    runs, start = [], rows[0]
    for previous, row in zip(rows, rows[1:]):
        if row != previous + 1:
            runs.append(slice(start, previous + 1))
            start = row
    runs.append(slice(start, rows[-1] + 1))
    return tuple(runs)


def _rows(rows: list[int]) -> slice | torch.Tensor:
    if rows[-1] - rows[0] + 1 == len(rows):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, dtype=torch.long)


class StepPlans:
    """The last plan built, reused while the step's adapter slots are the same.

    vLLM passes views of persistent index buffers that it rewrites in place each step, so
    (address, size, version) says when to look again (the sources are held, so no other
    tensor can take their address while the plan is cached); a rewrite with the same
    content (every decode step of an unchanged batch) keeps the plan object, and with it
    every projection's cached fused products (``LiveSlicesCache``)."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int, int], ...] | None = None
        self._sources: tuple[torch.Tensor, ...] = ()
        self._content: tuple[list[int], ...] | None = None
        self._plan: TokenPlan | None = None

    def get(self, sources: tuple[torch.Tensor, ...],
            build: Callable[[tuple[list[int], ...]], TokenPlan]) -> TokenPlan:
        key = tuple((t.data_ptr(), t.numel(), t._version) for t in sources)
        if key != self._key or self._plan is None:
            content = tuple(t.tolist() for t in sources)
            if content != self._content or self._plan is None:
                self._plan, self._content = build(content), content
            self._key, self._sources = key, sources
        return self._plan


_token_plans = StepPlans()
_segment_plans = StepPlans()


def token_plan(token_slots: torch.Tensor) -> TokenPlan:
    return _token_plans.get((token_slots,), lambda content: plan_from_token_slots(*content))


def segment_plan(seq_lens: torch.Tensor, segment_slots: torch.Tensor) -> TokenPlan:
    return _segment_plans.get((seq_lens, segment_slots), lambda content: plan_from_segments(*content))


@dataclass(slots=True)
class SlotWeights:
    """One stacked-weight tensor as the ops use it: which slots hold weights and, once a
    live slot is used, every slot's matrix in fp32 (``[slots, rows, cols]``, converted once
    per adapter load instead of in every op)."""

    source: torch.Tensor
    version: int
    live: list[bool]
    _fp32: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.source.shape[-2]

    @property
    def cols(self) -> int:
        return self.source.shape[-1]

    def fp32(self) -> torch.Tensor:
        if self._fp32 is None:
            self._fp32 = self.source.reshape(self.source.shape[0], self.rows, self.cols).float()
        return self._fp32


class SlotWeightsCache:
    """``SlotWeights`` per stacked tensor, valid while the tensor's version is unchanged.

    Keyed by the tensor object (held, so its id is not reused); vLLM passes the same few
    hundred stacked tensors every step and writes a slot in place when it loads or evicts
    an adapter, which bumps the version."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._entries: dict[int, SlotWeights] = {}

    def get(self, weights: torch.Tensor) -> SlotWeights:
        entry = self._entries.get(id(weights))
        if entry is not None and entry.source is weights and entry.version == weights._version:
            return entry
        live = weights.reshape(weights.shape[0], -1).any(dim=1).tolist()
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        entry = SlotWeights(weights, weights._version, live)
        self._entries[id(weights)] = entry
        return entry


slot_weights = SlotWeightsCache()


class ConvertedInput:
    """The last shrink input converted to the buffer's dtype, reused for the same tensor.

    vLLM shrinks the same activations once per slice (q, k and v of one projection): the
    punica wrapper passes one view object to every slice's op, and makes a new view for
    the next projection. Converting a prefill chunk costs more than its rank-16 product.
    The entry is held by identity (so its id is not reused); activations are inference
    tensors, which have no version counter, and nothing writes them between the slices."""

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._converted: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if inputs.dtype == dtype:
            return inputs
        if self._source is not inputs or self._converted is None or self._converted.dtype != dtype:
            self._source, self._converted = inputs, inputs.to(dtype)
        return self._converted


converted_input = ConvertedInput()


def _active_groups(plan: TokenPlan, weights: SlotWeights) -> list[TokenGroup]:
    return [g for g in plan.groups if g.slot != NO_ADAPTER and weights.live[g.slot]]


def _use_all_slots(plan: TokenPlan, active: list[TokenGroup]) -> bool:
    return len(active) > 1 and plan.tokens <= DENSE_MAX_TOKENS


def _token_dot(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``x[t] @ matrix.T`` for every token, with the kernel of the stock op's einsum (a
    batched product, one token per batch): the matrix is broadcast over tokens (a view),
    not copied per token, and the summation order, hence every bit of the result, is the
    stock op's."""
    return torch.bmm(x.unsqueeze(1), matrix.t().expand(x.shape[0], *matrix.t().shape)).squeeze(1)


def grouped_shrink(
    inputs: torch.Tensor, lora_a_weights: torch.Tensor, output_tensor: torch.Tensor,
    plan: TokenPlan, scaling: float,
) -> None:
    """``output[t, :rank] = scaling * inputs[t] @ A[slot(t)].T``, in the output's dtype (fp32).

    Tokens without an adapter, or whose adapter has no weights here, get zeros."""
    weights = slot_weights.get(lora_a_weights)
    rank = weights.rows
    dtype = output_tensor.dtype
    target = output_tensor[:, :rank]
    active = _active_groups(plan, weights)
    if len(active) != len(plan.groups):
        target.zero_()
    if not active:
        return
    x = converted_input(inputs, dtype)
    matrices = weights.fp32().to(dtype)
    if _use_all_slots(plan, active):
        product = _token_dot(x, matrices.reshape(-1, weights.cols)).gather(1, plan.columns(rank))
        if plan.has_base_tokens:
            product.mul_(plan.valid())
        target.copy_(product if scaling == 1.0 else product.mul_(scaling))
        return
    for group in active:
        product = _token_dot(x[group.rows], matrices[group.slot])
        target[group.rows] = product if scaling == 1.0 else product.mul_(scaling)


def grouped_expand(
    inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
    plan: TokenPlan, add_inputs: bool, columns: slice,
) -> None:
    """``output[t, columns] (+)= inputs[t] @ B[slot(t)].T``, in the output's dtype.

    ``columns`` is the output slice (expand_slice) or the width both sides share (expand:
    the adapter and the model may pad the output differently). The stock op multiplies
    in the output dtype; a 16-bit GEMM on this CPU accumulates in fp32 and rounds once, so
    the product of the 16-bit values summed in fp32 and rounded is the same number, and
    the CPU's fp32 GEMM is several times faster than its bf16 one at an inner dimension of
    8-64. Without ``add_inputs``, tokens without a delta get zeros, as the stock ops write."""
    weights = slot_weights.get(lora_b_weights)
    rank = weights.cols
    width = columns.stop - columns.start
    dtype = output_tensor.dtype
    target = output_tensor[:, columns]
    broadcast = inputs.shape[0] == 1 and output_tensor.shape[0] != 1
    if broadcast:
        # vLLM's op broadcasts the first token's delta over every output row.
        plan = plan_from_token_slots(plan.token_slots[:1])
    active = _active_groups(plan, weights)
    if not add_inputs and len(active) != len(plan.groups):
        target.zero_()
    if not active:
        return
    # The stock op rounds its fp32 input to the output dtype first; so does this.
    x = inputs[:, :rank].to(dtype).float()
    matrices = weights.fp32()[:, :width]
    if _use_all_slots(plan, active) and not broadcast and dtype != torch.float32:
        # Every slot's product for every token (one batched GEMM, inner dimension rank as
        # in the stock op), then each token's own slot's row.
        per_slot = torch.bmm(x.expand(matrices.shape[0], *x.shape), matrices.transpose(1, 2))
        slots = plan.columns(1).t().unsqueeze(-1).expand(1, plan.tokens, width)
        product = per_slot.gather(0, slots).squeeze(0)
        if plan.has_base_tokens:
            product.mul_(plan.valid())
        product = product.to(dtype)
        if add_inputs:
            target.add_(product)
        else:
            target.copy_(product)
        return
    for group in active:
        if dtype == torch.float32:
            product = _token_dot(x[group.rows], matrices[group.slot])
        else:
            product = (x[group.rows] @ matrices[group.slot].t()).to(dtype)
        out_rows = slice(None) if broadcast else group.rows
        if not add_inputs:
            target[out_rows] = product
        elif isinstance(out_rows, slice):
            target[out_rows].add_(product)
        else:
            target.index_add_(0, out_rows, product)


def _common_columns(lora_b_weights: torch.Tensor, output_tensor: torch.Tensor) -> slice:
    return slice(0, min(lora_b_weights.shape[-2], output_tensor.shape[1]))


# The six ops, with vLLM's signatures (``vllm/lora/ops/torch_ops/lora_ops.py``).


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    grouped_shrink(inputs, lora_b_weights, output_tensor, token_plan(lora_indices_tensor), scaling)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    grouped_expand(inputs, lora_b_weights, output_tensor, token_plan(lora_indices_tensor),
                   add_inputs, _common_columns(lora_b_weights, output_tensor))


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    grouped_expand(inputs, lora_b_weights, output_tensor, token_plan(lora_indices_tensor),
                   add_inputs, slice(slice_offset, slice_offset + slice_size))


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    grouped_shrink(inputs, lora_a_weights, output_tensor,
                   segment_plan(seq_len_tensor, lora_indices_tensor), scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    grouped_expand(inputs, lora_b_weights, output_tensor,
                   segment_plan(seq_len_tensor, lora_indices_tensor),
                   add_inputs, _common_columns(lora_b_weights, output_tensor))


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    grouped_expand(inputs, lora_b_weights, output_tensor,
                   segment_plan(seq_len_tensor, lora_indices_tensor),
                   add_inputs, slice(slice_offset, slice_offset + slice_size))


GROUPED_OPS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}
"""The names ``vllm.lora.punica_wrapper.punica_cpu`` imports from ``vllm.lora.ops.torch_ops``."""
