"""A merged mixture adapter equals the uniform mixture of its parts, on a real forward pass.

The reference mixture is built by peft itself: every part loaded as its own adapter, all
active at once, each layer's scaling divided by k. The merged adapter is one ordinary LoRA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agentstack.config import PACKAGE_DATA
from routers.mixture import MixtureCache, MixtureError, merge_adapters

ADAPTERS = PACKAGE_DATA / "adapters"
PROMPT = "Sam has 7 marbles and finds 5 more. How many marbles does Sam have now?"


def _reference_logits(model_dir: Path, parts: list[Path | None], ids: torch.Tensor) -> torch.Tensor:
    """peft with every adapter part active at once and each scaling divided by k."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapters = [p for p in parts if p is not None]
    model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name="p0")
    for i, path in enumerate(adapters[1:], start=1):
        model.load_adapter(str(path), adapter_name=f"p{i}")
    names = [f"p{i}" for i in range(len(adapters))]
    model.base_model.set_adapter(names)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in names:
                module.scaling[name] /= len(parts)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _merged_logits(model_dir: Path, merged: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, str(merged)).eval()(input_ids=ids).logits


@pytest.mark.parametrize(
    "names",
    [("selector", "single"), ("selector", "arguments", "single"), (None, "single")],
    ids=["two", "three", "base+single"],
)
def test_merged_adapter_equals_uniform_mixture(
    model_dir: Path, tmp_path: Path, names: tuple[str | None, ...]
) -> None:
    parts = [ADAPTERS / n if n else None for n in names]
    merged = merge_adapters(parts, tmp_path / "merged")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT, return_tensors="pt")["input_ids"]
    expected = _reference_logits(model_dir, parts, ids)
    got = _merged_logits(model_dir, merged, ids)
    # The mixture really moves the model: compare against the size of its effect.
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
    effect = (expected - plain).abs().max().item()
    assert effect > 1e-2
    assert torch.allclose(got, expected, atol=2e-4, rtol=1e-4), (got - expected).abs().max().item()


def test_merged_rank_and_scaling(tmp_path: Path) -> None:
    merged = merge_adapters([ADAPTERS / "selector", ADAPTERS / "single"], tmp_path / "m")
    import json

    config = json.loads((merged / "adapter_config.json").read_text())
    assert config["r"] == 32 and config["lora_alpha"] == 32


def test_cache_merges_once_and_keys_by_weights(tmp_path: Path) -> None:
    cache = MixtureCache(tmp_path / "mixtures")
    parts = {"selector": ADAPTERS / "selector", "single": ADAPTERS / "single"}
    first = cache.get(parts)
    stamp = (first / "adapter_model.safetensors").stat().st_mtime_ns
    again = cache.get(dict(reversed(list(parts.items()))))
    assert again == first
    assert (again / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert cache.key({"selector": ADAPTERS / "selector", "single": ADAPTERS / "arguments"}) != first.name


def test_no_adapter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MixtureError, match="at least one adapter"):
        merge_adapters([None, None], tmp_path / "m")
