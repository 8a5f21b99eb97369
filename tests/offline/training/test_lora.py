"""LoRA training: reply-only labels, the shipped adapters' cache shape, checkpoint resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from agentstack.config import DEFAULT_ROLES_FILE, PACKAGE_DATA, Settings
from agentstack.model_prep import prepare
from agentstack.offline.bfcl.training_data import ToolRole
from agentstack.offline.training import TrainSpec, build_labels, lora, train_lora
from agentstack.offline.training.recipes import RECIPES, REFERENCE_ROLE

ADAPTERS = PACKAGE_DATA / "adapters"

IGNORE = -100


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return prepare(Settings().models_dir).path


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _supervised(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int]) -> str:
    return str(
        tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE])
    )


def test_build_labels_keeps_only_the_reply(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": '{"answer": "Paris."}'},
    ]
    ids, labels = build_labels(tokenizer, messages)
    assert len(ids) == len(labels)
    assert ids == tokenizer.apply_chat_template(messages, return_dict=False)
    assert _supervised(tokenizer, ids, labels) == '{"answer": "Paris."}<|im_end|>'
    assert labels[: ids.index(tokenizer.eos_token_id)] == [IGNORE] * ids.index(
        tokenizer.eos_token_id
    )
    assert labels[-1] == IGNORE  # the newline the template adds after <|im_end|>


def test_build_labels_multi_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "HELLO."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "GOODBYE."},
    ]
    ids, labels = build_labels(tokenizer, messages)
    assert _supervised(tokenizer, ids, labels) == "HELLO.<|im_end|>GOODBYE.<|im_end|>"
    assert "You are a helpful AI assistant" in tokenizer.decode(ids)  # template default system


def test_spec_rejects_k_proj(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="k_proj"):
        TrainSpec(
            base_model=tmp_path,
            examples=tmp_path / "x.jsonl",
            out_dir=tmp_path,
            target_modules=("q_proj", "k_proj", "v_proj"),
        )


def test_shipped_adapters_share_v_proj_a_and_skip_k_proj() -> None:
    weights = {
        role.value: load_file(str(ADAPTERS / role.value / "adapter_model.safetensors"))
        for role in ToolRole
    }
    reference = weights[REFERENCE_ROLE.value]
    shared = sorted(k for k in reference if ".v_proj.lora_A." in k)
    assert len(shared) == 30
    for name, tensors in weights.items():
        assert not [k for k in tensors if "k_proj" in k], name
        assert sorted(k for k in tensors if ".v_proj.lora_A." in k) == shared
        for key in shared:
            assert torch.equal(tensors[key], reference[key]), (name, key)
        config = json.loads((ADAPTERS / name / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
        assert config["r"] == RECIPES[ToolRole(name)].rank
        assert set(config["target_modules"]) == {"q_proj", "v_proj", "o_proj"}
        assert (ADAPTERS / name / "README.md").is_file()


def test_roles_file_serves_the_shipped_tool_roles() -> None:
    roles = {r["name"]: r for r in yaml.safe_load(DEFAULT_ROLES_FILE.read_text())["roles"]}
    for role in ToolRole:
        entry = roles[role.value]
        assert "system_prompt" not in entry  # the tool workflow writes the whole context
        assert (DEFAULT_ROLES_FILE.parent / entry["adapter"]).resolve() == (ADAPTERS / role.value).resolve()


def _examples(path: Path) -> Path:
    lines = [
        {
            "messages": [
                {"role": "system", "content": "Shout."},
                {"role": "user", "content": f"What is {n} plus {n}?"},
                {"role": "assistant", "content": f"IT IS {2 * n}."},
            ]
        }
        for n in range(4)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_tiny_run_resumes_and_shares_v_proj_a(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = _examples(tmp_path / "tiny.jsonl")
    spec = TrainSpec(
        base_model=model_dir,
        examples=data,
        out_dir=tmp_path / "ref",
        steps=3,
        batch_size=2,
        checkpoint_every=2,
        warmup_steps=1,
    )

    def crash(*_: object) -> None:
        raise RuntimeError("simulated crash before the final save")

    monkeypatch.setattr(lora, "_write_adapter", crash)
    with pytest.raises(RuntimeError, match="simulated crash"), caplog.at_level(logging.INFO, lora.__name__):
        train_lora(spec)
    monkeypatch.undo()
    assert any("checkpoint at step 2/3" in m and "min left" in m for m in caplog.messages), caplog.messages
    checkpoint = spec.out_dir / "checkpoint"
    assert not (spec.out_dir / "adapter_model.safetensors").exists()
    saved_step = torch.load(checkpoint / "trainer_state.pt", weights_only=True)["step"]
    assert saved_step == 2

    result = train_lora(spec)
    assert result.resumed_from_step == saved_step
    assert result.steps == 3
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (spec.out_dir / name).is_file(), name
    assert not checkpoint.exists()
    config = json.loads((spec.out_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
    assert config["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    card = (spec.out_dir / "README.md").read_text()
    assert "tiny.jsonl" in card and "| steps | 3 |" in card
    assert str(tmp_path) not in (spec.out_dir / "adapter_config.json").read_text() + card

    monkeypatch.setattr(lora, "_build_model", crash)
    again = train_lora(spec)
    monkeypatch.undo()
    assert (again.steps, again.final_loss) == (result.steps, result.final_loss)

    other = train_lora(
        spec.model_copy(
            update={"out_dir": tmp_path / "other", "frozen_v_proj_a_from": spec.out_dir}
        )
    )
    ref_weights = load_file(str(spec.out_dir / "adapter_model.safetensors"))
    other_weights = load_file(str(other.out_dir / "adapter_model.safetensors"))
    v_a = [k for k in ref_weights if ".v_proj.lora_A." in k]
    assert v_a and all(torch.equal(ref_weights[k], other_weights[k]) for k in v_a)
    q_a = [k for k in ref_weights if ".q_proj.lora_A." in k]
    assert not all(torch.equal(ref_weights[k], other_weights[k]) for k in q_a)

    # A role on a frozen A is stale once its reference adapter changes: it is retrained.
    other_spec = spec.model_copy(update={"out_dir": other.out_dir, "frozen_v_proj_a_from": spec.out_dir})
    monkeypatch.setattr(lora, "_build_model", crash)
    assert train_lora(other_spec).steps == other.steps
    weights_file = spec.out_dir / "adapter_model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes() + b" ")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lora(other_spec)
    assert not (other.out_dir / "training.json").exists()


def test_tool_role_chats_are_supervised_on_the_reply_only(tokenizer: PreTrainedTokenizerBase) -> None:
    from agentstack.offline.bfcl.training_data import role_chats, train_examples

    pool = train_examples()[:3]
    for role in ToolRole:
        for chat in role_chats(role, pool)[:3]:
            ids, labels = build_labels(tokenizer, chat["messages"])
            assert _supervised(tokenizer, ids, labels) == chat["messages"][-1]["content"] + "<|im_end|>"
