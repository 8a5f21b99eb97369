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
In a small step (decode) a projection's live slices and active adapters are fused into
one shrink and one expand, whose stacked weights are reused from step to step: fewer,
larger ops, which is what a CPU decode step is short of.
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


STEP_PLAN = "_grouped_lora_step_plan"


def step_plan(wrapper: Any) -> TokenPlan | None:
    """The token plan of the wrapper's current step (None: no token has an adapter), kept
    on the wrapper for every op of the step. vLLM rewrites the wrapper's index buffers in
    place when the batch's mapping or adapter slots change, which bumps their version; the
    plan is looked at again only then, instead of in each of a step's few dozen ops."""
    version = wrapper._token_lora_indices._version
    cached = wrapper.__dict__.get(STEP_PLAN)
    if cached is not None and cached[0] == version:
        return cached[1]
    plan: TokenPlan | None
    if not wrapper.is_prefill:
        plan = token_plan(wrapper.token_lora_indices)
    elif wrapper.no_lora:
        plan = None
    else:
        _, seq_lens, segment_slots, *_ = wrapper.prefill_metadata
        plan = segment_plan(seq_lens, segment_slots)
    wrapper.__dict__[STEP_PLAN] = (version, plan)
    return plan


def add_lora_linear(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: tuple[torch.Tensor, ...],
    lora_b_stacked: tuple[torch.Tensor, ...],
    scale: float,
    output_slices: tuple[int, ...],
    *,
    buffer: tuple[torch.Tensor, ...] | None = None,
    **kwargs: Any,
) -> None:
    """``PunicaWrapperCPU.add_lora_linear``: shrink then expand each slice, as vLLM does,
    but with the step's token plan built once and slices skipped whose active adapters
    hold no weights there (k, gate_up and down for a q/v/o adapter) before any buffer is
    made. In a small step (decode) the projection's live slices and adapters are fused
    into one shrink and one expand (``FusedProjection``): a decode step is a few dozen
    such calls, and their count of small ops is what it spends. In a large one (prefill)
    each adapter's tokens are shrunk once for all its slices and expanded with one
    block-diagonal product (``AdapterProducts``)."""
    plan = step_plan(self)
    if plan is None:
        return
    projection = live_slices(plan, lora_a_stacked, lora_b_stacked, output_slices)
    if not projection.slices:
        return
    if x.dim() != 2 or y.dim() != 2:
        x, y = x.view(-1, x.shape[-1]), y.view(-1, y.shape[-1])
    if y.dtype != torch.float32:
        fused = projection.fused(plan, y.shape[1])
        if fused is not None:
            fused.apply(x, y, scale)
        else:
            projection.apply_per_adapter(plan, x, y, scale)
        return
    # An fp32 output keeps the per-slice ops: their fp32 expand uses the stock op's kernel.
    for index, offset, a, b, width in projection.slices:
        deltas = buffer[index] if buffer is not None else torch.empty(x.shape[0], slot_weights.get(a).rows)
        grouped_shrink(x, a, deltas, plan, scale)
        grouped_expand(deltas, b, y, plan, True, slice(offset, offset + width))


LiveSlice = tuple[int, int, torch.Tensor, torch.Tensor, int]
"""(slice index, output offset, stacked A, stacked B, output width)."""


@dataclass(slots=True)
class FusedProjection:
    """One projection's LoRA for one small step, as two products: the A of every live
    slice and active adapter stacked (``[adapters * slices * rank, in]``) for the shrink,
    and their B block-diagonal over adapters and slices (``[adapters * slices * rank,
    out]``, zero columns where a slice without weights lies between two live ones) for the
    expand. A boolean mask (``[tokens, adapters * slices * rank]``) zeroes every rank
    that is not the token's own adapter's before the expand, so the expand needs no
    per-adapter products or gathers, and its product is added to the output in one op.

    Each output element is still the product the stock ops compute, summed in the same
    order (the shrink is the stock op's one-token batched product over a wider matrix; the
    expand adds exact zeros for the other slices' and adapters' ranks), so results stay
    bit-identical; the tensors are built once per batch composition and reused every
    decode step."""

    shrink: torch.Tensor
    others: torch.Tensor
    expand: torch.Tensor
    columns: slice | None
    """The output columns the expand covers; None for all of them."""

    @classmethod
    def build(cls, plan: TokenPlan, slices: list[LiveSlice], out_width: int) -> FusedProjection | None:
        """None when no token's adapter holds weights in these slices."""
        shrink_weights = [slot_weights.get(a) for _, _, a, _, _ in slices]
        expand_weights = [slot_weights.get(b) for _, _, _, b, _ in slices]
        adapters = sorted({g.slot for g in plan.groups
                           if any(_writes(a, b, g.slot) for _, _, a, b, _ in slices)})
        if not adapters:
            return None
        chosen = torch.tensor(adapters, dtype=torch.long)
        shrink = torch.cat([w.fp32()[chosen] for w in shrink_weights], dim=1)
        shrink = shrink.reshape(-1, shrink.shape[-1])
        expand, columns = _block_diagonal([
            (offset, weights.fp32()[chosen, :width].transpose(1, 2))
            for (_, offset, _, _, width), weights in zip(slices, expand_weights, strict=True)])
        ranks = expand.shape[-2]
        position = {slot: i for i, slot in enumerate(adapters)}
        # Tokens without an adapter here (slot -1, or none of its weights in these slices)
        # match no block.
        token_block = torch.tensor([position.get(s, -1) for s in plan.token_slots])
        others = torch.arange(len(adapters) * ranks) // ranks != token_block[:, None]
        return cls(shrink=shrink.t().expand(plan.tokens, *shrink.t().shape), others=others,
                   expand=expand.reshape(-1, expand.shape[-1]),
                   columns=None if columns == slice(0, out_width) else columns)

    def apply(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
        """``y[:, slice] += x @ A.T @ B.T`` for every live slice, each token its adapter's."""
        deltas = torch.bmm(x.float().unsqueeze(1), self.shrink).squeeze(1)
        # Filled, not multiplied: another adapter's overflowing delta must not turn into
        # NaN (inf * 0) in this token's product.
        deltas.masked_fill_(self.others, 0.0)
        if scale != 1.0:
            deltas.mul_(scale)
        # The stock expand rounds the fp32 deltas to the output dtype before its product.
        product = (deltas.to(y.dtype).float() @ self.expand).to(y.dtype)
        (y if self.columns is None else y[:, self.columns]).add_(product)


def _block_diagonal(blocks: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, slice]:
    """Several slices' B (each ``[..., rank, width]``, with its output offset, in order) as
    one block-diagonal ``[..., slices * rank, span]`` over the output columns from the
    first slice's start to the last one's end (zeros between), and that span."""
    rank = blocks[0][1].shape[-2]
    start = blocks[0][0]
    stop = blocks[-1][0] + blocks[-1][1].shape[-1]
    expand = torch.zeros(*blocks[0][1].shape[:-2], rank * len(blocks), stop - start)
    for index, (offset, block) in enumerate(blocks):
        expand[..., index * rank:(index + 1) * rank, offset - start:offset - start + block.shape[-1]] = block
    return expand, slice(start, stop)


@dataclass(slots=True)
class LiveProjection:
    """The slices of one projection that an adapter of this step writes, and how a step
    applies them: fused for small steps, per adapter for large ones."""

    slices: list[LiveSlice]
    _fused: FusedProjection | None = None
    _fused_built: bool = False
    _per_adapter: dict[int, AdapterProducts | None] = field(default_factory=dict)

    def fused(self, plan: TokenPlan, out_width: int) -> FusedProjection | None:
        """The fused products for a small step (built on first use); None for a large one."""
        if plan.tokens > DENSE_MAX_TOKENS:
            return None
        if not self._fused_built:
            self._fused, self._fused_built = FusedProjection.build(plan, self.slices, out_width), True
        return self._fused

    def apply_per_adapter(self, plan: TokenPlan, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
        """A large step (prefill), 16-bit output: per adapter, one shrink over all its live
        slices (one pass over its tokens instead of one per slice: the shrink is the
        stock op's one-token product, bound by reading the activations) and one expand
        into all of them (block-diagonal B, as ``FusedProjection``)."""
        inputs = converted_input(x, torch.float32)
        for group in plan.groups:
            if group.slot == NO_ADAPTER:
                continue
            products = self._adapter_products(group.slot)
            if products is None:
                continue
            deltas = _token_dot(inputs[group.rows], products.shrink)
            if scale != 1.0:
                deltas.mul_(scale)
            # The stock expand rounds the fp32 deltas to the output dtype before its product.
            product = (deltas.to(y.dtype).float() @ products.expand).to(y.dtype)
            columns = y[:, products.columns]
            if len(group.runs) > MAX_RUN_ADDS:
                columns.index_add_(0, group.rows, product)  # type: ignore[arg-type]
                continue
            # Prefills of several roles interleave: a few runs of rows per adapter, each
            # one contiguous add (an index_add over scattered rows costs more than the
            # products).
            done = 0
            for run in group.runs:
                size = run.stop - run.start
                columns[run].add_(product[done:done + size])
                done += size

    def _adapter_products(self, slot: int) -> AdapterProducts | None:
        if slot not in self._per_adapter:
            self._per_adapter[slot] = AdapterProducts.build(slot, self.slices)
        return self._per_adapter[slot]


@dataclass(frozen=True, slots=True)
class AdapterProducts:
    """One adapter's LoRA on one projection for a large step: its A of every live slice
    stacked (``[slices * rank, in]``) and its B block-diagonal (``[slices * rank, out]``),
    so that each token's deltas are one shrink and one expand whatever the slice count.
    The expand adds exact zeros for the other slices' ranks, so each output element is
    the stock op's product."""

    shrink: torch.Tensor
    expand: torch.Tensor
    columns: slice

    @classmethod
    def build(cls, slot: int, slices: list[LiveSlice]) -> AdapterProducts | None:
        """None when the adapter holds no weights in these slices."""
        live = [(offset, a, b, width) for _, offset, a, b, width in slices if _writes(a, b, slot)]
        if not live:
            return None
        expand, columns = _block_diagonal([
            (offset, slot_weights.get(b).fp32()[slot, :width].t()) for offset, _, b, width in live])
        shrink = torch.cat([slot_weights.get(a).fp32()[slot] for _, a, _, _ in live])
        return cls(shrink=shrink, expand=expand, columns=columns)


def _writes(lora_a: torch.Tensor, lora_b: torch.Tensor, slot: int) -> bool:
    """Whether the adapter in ``slot`` holds weights in this slice (both A and B): the one
    test of which slices and adapters a step's products include."""
    return slot != NO_ADAPTER and slot_weights.get(lora_a).live[slot] and slot_weights.get(lora_b).live[slot]


class LiveSlicesCache:
    """Per projection, the slices an adapter of this step writes, until the step's plan
    or any of the projection's stacked weights changes (held, and checked by version).
    In decode the plan lasts as long as the batch, so a projection no adapter touches
    costs one lookup per step, and one that adapters touch reuses its fused products."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple[torch.Tensor, ...], TokenPlan, list[int], LiveProjection]] = {}

    def __call__(self, plan: TokenPlan, lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...],
                 widths: tuple[int, ...]) -> LiveProjection:
        versions = [t._version for t in lora_a] + [t._version for t in lora_b]
        entry = self._entries.get(id(lora_a))
        if entry is not None and entry[0] is lora_a and entry[1] is plan and entry[2] == versions:
            return entry[3]
        live = []
        for index, (a, b, width) in enumerate(zip(lora_a, lora_b, widths, strict=True)):
            if any(_writes(a, b, g.slot) for g in plan.groups):
                live.append((index, sum(widths[:index]), a, b, width))
        if len(self._entries) >= SlotWeightsCache.MAX_ENTRIES:
            self._entries.clear()
        projection = LiveProjection(live)
        self._entries[id(lora_a)] = (lora_a, plan, versions, projection)
        return projection


live_slices = LiveSlicesCache()


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
