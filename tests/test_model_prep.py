"""The packaged model is prepared once, verified by checksum, and rebuilt if altered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agentstack.model_prep import MANIFEST, prepare, verify


def test_prepared_model_is_reused_and_loadable_by_vllm_config(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert verify(model_dir)
    assert prepare(model_dir.parent).reused


def test_tampered_copy_fails_verification(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    assert not verify(copy), "a missing weights file must be detected"
    (copy / "model.safetensors").write_bytes(b"not weights")
    assert not verify(copy)
    (copy / MANIFEST).unlink()
    assert not verify(copy)
