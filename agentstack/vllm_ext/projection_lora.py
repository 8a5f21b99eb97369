"""``PunicaWrapperCPU.add_lora_linear`` with each projection's LoRA as two prepacked GEMMs.

vLLM applies a projection's adapters slice by slice (q, k, v), each slice a shrink into
an fp32 buffer and an expand, through the six torch ops that ``grouped_lora`` replaces.
For a 16-bit model this module does the whole projection in two products of the model's
own dtype, on the GEMM kernel vLLM's CPU linear layers use (oneDNN, weights prepacked
once): a shrink by every live slice's A stacked, and an expand by their B arranged
block-diagonally, so a step pays two GEMMs per projection however many slices and
adapters it has. Weights are packed once per set of adapters and reused while the
stacked tensors keep their version (vLLM writes a slot in place when it loads or evicts
an adapter).

Results equal vLLM's torch ops up to the order of fp32 summation inside the GEMM, as
vLLM's GPU kernels do (its punica tests compare with ``assert_close``): the shrink is
rounded to the model's dtype once, where the stock ops keep it in fp32 and round it
before their expand. A float32 model keeps the exact per-slice ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from agentstack.vllm_ext.grouped_lora import (
    DENSE_MAX_TOKENS,
    MAX_RUN_ADDS,
    NO_ADAPTER,
    TokenPlan,
    grouped_expand,
    grouped_shrink,
    segment_plan,
    slot_weights,
    token_plan,
)

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
    """``PunicaWrapperCPU.add_lora_linear``, with the step's token plan built once and the
    slices skipped whose active adapters hold no weights there (k for a q/v/o adapter).
    A small step (decode) applies every active adapter in one shrink and one expand, each
    token's deltas masked to its own adapter's ranks between them; a large one (prefill)
    one shrink and one expand per adapter over its tokens."""
    plan = step_plan(self)
    if plan is None:
        return
    projection = live_slices(plan, lora_a_stacked, lora_b_stacked, output_slices)
    if not projection.slices:
        return
    if x.dim() != 2 or y.dim() != 2:
        x, y = x.view(-1, x.shape[-1]), y.view(-1, y.shape[-1])
    if y.dtype != torch.float32:
        x = x.to(y.dtype).contiguous()
        if plan.tokens <= DENSE_MAX_TOKENS:
            projection.apply_fused(plan, x, y, scale)
        else:
            projection.apply_per_adapter(plan, x, y, scale)
        return
    # A float32 output keeps the per-slice ops, bit for bit vLLM's.
    for index, offset, a, b, width in projection.slices:
        deltas = buffer[index] if buffer is not None else torch.empty(x.shape[0], slot_weights.get(a).rows)
        grouped_shrink(x, a, deltas, plan, scale)
        grouped_expand(deltas, b, y, plan, True, slice(offset, offset + width))


class Gemm:
    """``x @ weight`` for one ``[in, out]`` weight in the activations' dtype, on vLLM's
    prepacked oneDNN GEMM when the build has it (the kernel of vLLM's CPU linear layers,
    far cheaper per call than ``torch.mm`` at a few rows), else ``torch.mm``."""

    def __init__(self, weight: torch.Tensor) -> None:
        from vllm import _custom_ops as ops

        self._weight: torch.Tensor | None = weight.contiguous()
        self._handler: Any = None
        if ops._supports_onednn:
            try:
                self._handler = ops.create_onednn_mm(self._weight, 32)
            except RuntimeError:
                return
            # The handler holds its own packed copy (vLLM drops a linear layer's weight the same way).
            self._weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight is not None:
            return x @ self._weight
        from vllm import _custom_ops as ops

        return ops.onednn_mm(self._handler, x, None)


LiveSlice = tuple[int, int, torch.Tensor, torch.Tensor, int]
"""(slice index, output offset, stacked A, stacked B, output width)."""


@dataclass(frozen=True, slots=True)
class ProjectionProducts:
    """Some adapters' LoRA on one projection: their A of every given slice stacked
    (``[in, adapters * slices * rank]``, adapter-major) and their B block-diagonal over
    adapters and slices (``[adapters * slices * rank, span]``, zero columns where a slice
    not given lies between two given ones), so that any token's deltas for all of them
    are one shrink and one expand, the expand adding exact zeros for ranks not its own."""

    shrink: Gemm
    expand: Gemm
    columns: slice
    """The output columns the expand covers."""
    ranks: int
    """Ranks of one adapter (its slices together)."""

    @classmethod
    def build(cls, slots: list[int], slices: list[LiveSlice], dtype: torch.dtype) -> ProjectionProducts:
        chosen = torch.tensor(slots, dtype=torch.long)
        shrink = torch.cat([slot_weights.get(a).fp32()[chosen] for _, _, a, _, _ in slices], dim=1)
        blocks = [(offset, slot_weights.get(b).fp32()[chosen, :width].transpose(1, 2))
                  for _, offset, _, b, width in slices]
        expand, columns = _block_diagonal(blocks)
        return cls(shrink=Gemm(shrink.reshape(-1, shrink.shape[-1]).t().to(dtype)),
                   expand=Gemm(expand.reshape(-1, expand.shape[-1]).to(dtype)),
                   columns=columns, ranks=expand.shape[-2])


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


def _writes(lora_a: torch.Tensor, lora_b: torch.Tensor, slot: int) -> bool:
    """Whether the adapter in ``slot`` holds weights in this slice (both A and B): the one
    test of which slices and adapters a step's products include."""
    return slot != NO_ADAPTER and slot_weights.get(lora_a).live[slot] and slot_weights.get(lora_b).live[slot]


@dataclass(slots=True)
class LiveProjection:
    """The slices of one projection that an adapter of this step writes, and how the step
    applies them: fused for small steps, per adapter for large ones."""

    owner: tuple[torch.Tensor, ...]
    """The projection's stacked A (its identity keys ``packed_products``)."""
    slices: list[LiveSlice]
    versions: tuple[int, ...]
    _fused: tuple[ProjectionProducts, torch.Tensor] | None = None

    def writes(self, slot: int) -> bool:
        """Whether the adapter in ``slot`` holds weights in any of these slices."""
        return any(_writes(a, b, slot) for _, _, a, b, _ in self.slices)

    def apply_fused(self, plan: TokenPlan, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
        """``y[:, slices] += x @ A.T @ B.T`` for every token, with its own adapter's A and B:
        one shrink over every active adapter's ranks, the other adapters' ranks of each
        token filled with zeros (filled, not multiplied: another adapter's overflowing
        delta must not turn into NaN), and one expand."""
        if self._fused is None:
            self._fused = self._build_fused(plan, x.dtype)
        products, others = self._fused
        deltas = products.shrink(x)
        deltas.masked_fill_(others, 0.0)
        if scale != 1.0:
            deltas.mul_(scale)
        y[:, products.columns].add_(products.expand(deltas))

    def _build_fused(self, plan: TokenPlan, dtype: torch.dtype) -> tuple[ProjectionProducts, torch.Tensor]:
        adapters = sorted({g.slot for g in plan.groups if self.writes(g.slot)})
        products = self._products(tuple(adapters), dtype)
        position = {slot: i for i, slot in enumerate(adapters)}
        # Tokens without an adapter here (slot -1, or none of its weights in these slices)
        # match no block.
        token_block = torch.tensor([position.get(s, -1) for s in plan.token_slots])
        others = torch.arange(len(adapters) * products.ranks) // products.ranks != token_block[:, None]
        return products, others

    def apply_per_adapter(self, plan: TokenPlan, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
        """A large step (prefill): per adapter, one shrink and one expand over its tokens."""
        for group in plan.groups:
            if not self.writes(group.slot):
                continue
            products = self._products((group.slot,), x.dtype)
            deltas = products.shrink(x[group.rows])
            if scale != 1.0:
                deltas.mul_(scale)
            product = products.expand(deltas)
            columns = y[:, products.columns]
            if len(group.runs) > MAX_RUN_ADDS:
                columns.index_add_(0, group.rows, product)  # type: ignore[arg-type]
                continue
            # Prefills of several roles interleave: a few runs of rows per adapter, each
            # one contiguous add (an index_add over scattered rows costs more).
            done = 0
            for run in group.runs:
                size = run.stop - run.start
                columns[run].add_(product[done:done + size])
                done += size

    def _products(self, slots: tuple[int, ...], dtype: torch.dtype) -> ProjectionProducts:
        return packed_products.get(self.owner, (slots, dtype), self.versions,
                                   lambda: ProjectionProducts.build(list(slots), self.slices, dtype))


T = TypeVar("T")


class VersionedCache:
    """Values built from stacked weights, kept while those weights keep their versions.

    vLLM passes the same stacked tensors every step and writes a slot in place when it
    loads or evicts an adapter, which bumps the version; a batch whose requests come and
    go with the same adapters keeps its packed products."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Any], tuple[object, tuple[int, ...], Any]] = {}

    def get(self, owner: object, key: Any, versions: tuple[int, ...], build: Callable[[], T]) -> T:
        """The value for ``key`` of ``owner`` (held, so its id is not reused)."""
        entry = self._entries.get((id(owner), key))
        if entry is not None and entry[0] is owner and entry[1] == versions:
            return entry[2]  # type: ignore[no-any-return]
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        value = build()
        self._entries[(id(owner), key)] = (owner, versions, value)
        return value


packed_products = VersionedCache()


class LiveSlicesCache:
    """Per projection, the slices an adapter of this step writes, until the step's plan
    or any of the projection's stacked weights changes (held, and checked by version).
    In decode the plan lasts as long as the batch, so a projection no adapter touches
    costs one lookup per step, and one that adapters touch reuses its fused products."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple[torch.Tensor, ...], TokenPlan, LiveProjection]] = {}

    def __call__(self, plan: TokenPlan, lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...],
                 widths: tuple[int, ...]) -> LiveProjection:
        versions = tuple(t._version for t in lora_a) + tuple(t._version for t in lora_b)
        entry = self._entries.get(id(lora_a))
        if entry is not None and entry[0] is lora_a and entry[1] is plan and entry[2].versions == versions:
            return entry[2]
        live = []
        for index, (a, b, width) in enumerate(zip(lora_a, lora_b, widths, strict=True)):
            if any(_writes(a, b, g.slot) for g in plan.groups):
                live.append((index, sum(widths[:index]), a, b, width))
        if len(self._entries) >= VersionedCache.MAX_ENTRIES:
            self._entries.clear()
        projection = LiveProjection(lora_a, live, versions)
        self._entries[id(lora_a)] = (lora_a, plan, projection)
        return projection


live_slices = LiveSlicesCache()
