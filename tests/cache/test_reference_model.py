"""The whole-model reference: it is the packaged model, and a prefix cache read by the role
that wrote it changes nothing, in either sharing mode.

The model is cut to its first LAYERS layers (same per-layer mechanics, a fraction of the
cost); the bench runs all 30."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cache.reference import DecomposedKV, ReferenceModel
from tests.cache.conftest import shipped_family

CONTEXT = [1, 504, 2434, 314, 253, 5355, 30, 1053, 216, 314, 2113, 28, 260, 1715, 282, 4849]
QUESTION = [2, 198, 1350, 314, 357, 47]
LAYERS = 3


@pytest.fixture(scope="module")
def model(model_dir: Path) -> ReferenceModel:
    return ReferenceModel(model_dir, num_layers=LAYERS)


def test_reference_model_is_the_packaged_model(model: ReferenceModel, model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, num_hidden_layers=LAYERS)
    with torch.no_grad():
        expected = hf(torch.tensor([CONTEXT])).logits[0]
    logits, _ = model.forward(CONTEXT, model.load_role(None))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)


def test_own_prefix_cache_changes_nothing_in_any_mode(model: ReferenceModel) -> None:
    role = model.load_role(shipped_family()[0])
    shared_a = [layer.v.a for layer in role]  # type: ignore[union-attr]
    own, _ = model.forward(CONTEXT + QUESTION, role)
    _, full = model.forward(CONTEXT, role)
    from_full, _ = model.forward(QUESTION, role, past=full)
    _, decomposed = model.forward(CONTEXT, role, shared_a=shared_a)
    assert isinstance(decomposed[0], DecomposedKV)
    from_decomposed, _ = model.forward(QUESTION, role, past=decomposed, shared_a=shared_a)
    torch.testing.assert_close(from_full, own[len(CONTEXT) :], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_decomposed, own[len(CONTEXT) :], rtol=1e-4, atol=1e-4)


def test_another_roles_prefix_is_read_differently_by_the_two_shared_modes(model: ReferenceModel) -> None:
    writer_dir, reader_dir = shipped_family()[:2]
    writer, reader = model.load_role(writer_dir), model.load_role(reader_dir)
    shared_a = [layer.v.a for layer in writer]  # type: ignore[union-attr]
    _, full = model.forward(CONTEXT, writer)
    _, decomposed = model.forward(CONTEXT, writer, shared_a=shared_a)
    via_full, _ = model.forward(QUESTION, reader, past=full)
    via_decomposed, _ = model.forward(QUESTION, reader, past=decomposed, shared_a=shared_a)
    assert not torch.allclose(via_full, via_decomposed, rtol=1e-3, atol=1e-3)
