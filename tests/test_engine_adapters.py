"""Adapters with weights on projections the engine does not wrap are refused, not half-served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from agentstack.config import PACKAGE_DATA, Settings
from agentstack.engine import AdapterLoadError, adapter_modules, check_adapter_targets

SELECTOR = PACKAGE_DATA / "adapters" / "selector"


def _with_mlp(tmp_path: Path) -> Path:
    adapter = tmp_path / "selector-mlp"
    shutil.copytree(SELECTOR, adapter)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    tensors["base_model.model.model.layers.3.mlp.down_proj.lora_A.weight"] = tensors[
        next(k for k in tensors if k.endswith("o_proj.lora_A.weight"))].new_zeros(16, 1536)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    return adapter


def test_shipped_roles_adapt_only_what_the_engine_wraps_by_default() -> None:
    modules = adapter_modules(SELECTOR)
    assert modules == {"q_proj", "v_proj", "o_proj"}
    check_adapter_targets("selector", modules, Settings().lora_target_modules)


def test_an_adapter_on_an_unwrapped_projection_is_refused_with_its_name(tmp_path: Path) -> None:
    modules = adapter_modules(_with_mlp(tmp_path))
    assert "down_proj" in modules
    with pytest.raises(AdapterLoadError, match="down_proj"):
        check_adapter_targets("mlp", modules, ["q_proj", "v_proj", "o_proj"])
    check_adapter_targets("mlp", modules, None)  # an engine that wraps everything takes it
    check_adapter_targets("mlp", modules, ["qkv_proj", "o_proj", "down_proj"])  # fused names count too


def test_modules_come_from_the_config_when_weights_are_not_safetensors(tmp_path: Path) -> None:
    adapter = tmp_path / "bin-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"target_modules": ["q_proj", "up_proj"]}')
    assert adapter_modules(adapter) == {"q_proj", "up_proj"}
    with pytest.raises(AdapterLoadError, match="up_proj"):
        check_adapter_targets("bin-adapter", {"q_proj", "up_proj"}, ["q_proj", "v_proj", "o_proj"])
    check_adapter_targets("bin-adapter", {"q_proj", "up_proj"}, ["qkv_proj", "gate_up_proj"])
