"""Only adapters with the same v_proj lora_A may share a decomposed cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cache.adapters import SharedA, group_by_shared_a, shared_a_fingerprint
from tests.cache.conftest import shipped_family


def copy_with(tmp_path: Path, name: str, change: str) -> Path:
    """A copy of a shipped adapter with one layer's v_proj A or B changed."""
    target = tmp_path / name
    shutil.copytree(shipped_family()[0], target)
    weights = load_file(str(target / "adapter_model.safetensors"))
    if change == "v_proj_a":
        key = "base_model.model.model.layers.3.self_attn.v_proj.lora_A.weight"
        weights[key] = weights[key] + 1e-3
    elif change == "v_proj_b":
        key = "base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"
        weights[key] = torch.zeros_like(weights[key])
    save_file(weights, str(target / "adapter_model.safetensors"))
    return target


def test_roles_trained_on_the_shared_a_group_together(tmp_path: Path) -> None:
    first, second = shipped_family()[:2]
    other_b = copy_with(tmp_path, "other-b", "v_proj_b")
    other_a = copy_with(tmp_path, "other-a", "v_proj_a")
    assert shared_a_fingerprint(first) == shared_a_fingerprint(second) == shared_a_fingerprint(other_b)
    groups = group_by_shared_a([other_a, first, other_b, second])
    assert [{p.name for p in g} for g in groups] == [{first.name, second.name, "other-b"}, {"other-a"}]


def test_an_adapter_on_k_proj_is_refused(tmp_path: Path) -> None:
    adapter = copy_with(tmp_path, "keys", "none")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["target_modules"] = ["k_proj", "q_proj", "v_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="k_proj"):
        shared_a_fingerprint(adapter)


def test_family_members_are_the_adapters_with_the_shared_a(tmp_path: Path) -> None:
    """Which adapters a decomposed engine serves from shared blocks; the others it serves
    with blocks of their own."""
    family = shipped_family()
    shared = SharedA.of(family[0])
    assert shared.rank == json.loads((family[0] / "adapter_config.json").read_text())["r"]
    assert all(shared.is_member(member) for member in family)
    assert shared.is_member(copy_with(tmp_path, "new-b", "v_proj_b")), "a new role trains only B"
    other = copy_with(tmp_path, "other-a", "v_proj_a")
    assert not shared.is_member(other)


def test_membership_follows_an_adapter_replaced_in_place(tmp_path: Path) -> None:
    shared = SharedA.of(shipped_family()[0])
    role = copy_with(tmp_path, "role", "v_proj_b")
    assert shared.is_member(role)
    weights = load_file(str(role / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"
    weights[key] = weights[key] * 2
    save_file(weights, str(role / "adapter_model.safetensors"))
    assert not shared.is_member(role)
