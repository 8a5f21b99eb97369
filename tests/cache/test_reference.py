"""The reference: decomposed attention equals each role's own attention for the same hidden
states, on random weights and on the packaged model with the shipped role adapters, while
full sharing gives the reader the writer's values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cache.reference import (
    AttentionWeights,
    LoRAPair,
    RoleLoRA,
    attend_decomposed,
    attend_full,
    decompose_kv,
    load_attention_weights,
    load_role_lora,
    padded_decomposed_attention,
    padded_head_size,
    per_role_attention,
    project_kv,
)
from tests.cache.conftest import shipped_family

F64 = torch.float64
TOKENS = 12
CPU_ATTENTION_HEAD_SIZES = [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512]


def random_weights(g: torch.Generator, *, hidden: int = 24, heads: int = 6, kv_heads: int = 2, d: int = 8) -> AttentionWeights:
    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g, dtype=F64) / size[-1] ** 0.5

    return AttentionWeights(
        q=rand(heads * d, hidden), k=rand(kv_heads * d, hidden), v=rand(kv_heads * d, hidden),
        o=rand(hidden, heads * d), num_heads=heads, num_kv_heads=kv_heads, head_dim=d, rope_theta=10000.0,
    )


def random_role(g: torch.Generator, w: AttentionWeights, shared_a: torch.Tensor) -> RoleLoRA:
    hidden, r = w.q.shape[1], shared_a.shape[0]

    def pair(out: int, inp: int, a: torch.Tensor | None = None) -> LoRAPair:
        a = a if a is not None else torch.randn(r, inp, generator=g, dtype=F64)
        return LoRAPair(a=a, b=torch.randn(out, r, generator=g, dtype=F64), scale=2.0)

    return RoleLoRA(q=pair(w.q.shape[0], hidden), v=pair(w.v.shape[0], hidden, shared_a), o=pair(hidden, w.o.shape[1]))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def toy() -> tuple[AttentionWeights, torch.Tensor, list[RoleLoRA], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = random_weights(g)
    shared_a = torch.randn(4, w.q.shape[1], generator=g, dtype=F64)
    roles = [random_role(g, w, shared_a) for _ in range(3)]
    return w, shared_a, roles, torch.randn(TOKENS, w.q.shape[1], generator=g, dtype=F64)


def test_decomposed_equals_each_roles_own_attention(toy) -> None:  # type: ignore[no-untyped-def]
    w, shared_a, roles, x = toy
    positions = torch.arange(TOKENS)
    cache = decompose_kv(x, positions, w, shared_a)
    for role in roles:
        expected = per_role_attention(x, positions, w, role)
        torch.testing.assert_close(attend_decomposed(x, positions, cache, w, role), expected, rtol=1e-12, atol=1e-12)


def test_a_suffix_reads_the_cached_prefix_exactly(toy) -> None:  # type: ignore[no-untyped-def]
    """The served case: prefix from the cache, new tokens' queries computed by the reader."""
    w, shared_a, roles, x = toy
    positions = torch.arange(TOKENS)
    cache = decompose_kv(x, positions, w, shared_a)
    expected = per_role_attention(x, positions, w, roles[1])[8:]
    got = attend_decomposed(x[8:], positions[8:], cache, w, roles[1])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_head_padded_packing_equals_decomposed(toy) -> None:  # type: ignore[no-untyped-def]
    w, shared_a, roles, x = toy
    positions = torch.arange(TOKENS)
    cache = decompose_kv(x, positions, w, shared_a)
    for role in roles:
        got = padded_decomposed_attention(x, positions, cache, w, role, head_size=16)
        torch.testing.assert_close(got, attend_decomposed(x, positions, cache, w, role), rtol=1e-12, atol=1e-12)


def test_full_shared_gives_the_reader_the_writers_values(toy) -> None:  # type: ignore[no-untyped-def]
    w, _, (writer, reader, _), x = toy
    positions = torch.arange(TOKENS)
    foreign = project_kv(x, positions, w, writer)
    got = attend_full(x, positions, foreign, w, reader)
    assert relative_error(got, per_role_attention(x, positions, w, reader)) > 1e-2
    # Reading one's own K and V is plain attention: full sharing is exact within a role.
    own = project_kv(x, positions, w, reader)
    torch.testing.assert_close(attend_full(x, positions, own, w, reader), per_role_attention(x, positions, w, reader))


def test_served_head_size_on_cpu_attention() -> None:
    assert padded_head_size(64, 8, CPU_ATTENTION_HEAD_SIZES) == 80
    assert padded_head_size(64, 16, CPU_ATTENTION_HEAD_SIZES) == 80
    assert padded_head_size(64, 24, CPU_ATTENTION_HEAD_SIZES) == 96




@pytest.mark.parametrize("layer", [0, 29])
def test_packaged_model_with_shipped_adapters(model_dir: Path, layer: int) -> None:
    """Real layer weights and the shipped role adapters (whatever their current training)."""
    family = shipped_family()
    assert len(family) >= 2, "need two shipped role adapters with one shared v_proj lora_A"
    w = load_attention_weights(model_dir, layer)
    roles = [load_role_lora(a, layer) for a in family]
    shared_a = roles[0].v.a  # type: ignore[union-attr]
    for role in roles:
        assert role.v is not None and torch.equal(role.v.a, shared_a), "roles must share v_proj lora_A"
    g = torch.Generator().manual_seed(layer)
    hidden = w.q.shape[1]
    x = torch.randn(40, hidden, generator=g, dtype=F64)
    positions = torch.arange(40)
    cache = decompose_kv(x, positions, w, shared_a)
    own = [per_role_attention(x, positions, w, role) for role in roles]
    for role, expected in zip(roles, own):
        torch.testing.assert_close(attend_decomposed(x, positions, cache, w, role), expected, rtol=1e-10, atol=1e-10)
        head_size = padded_head_size(w.head_dim, shared_a.shape[0], CPU_ATTENTION_HEAD_SIZES)
        padded = padded_decomposed_attention(x, positions, cache, w, role, head_size=head_size)
        torch.testing.assert_close(padded, expected, rtol=1e-10, atol=1e-10)
    # Full sharing: the second role reads the first role's V.
    foreign = project_kv(x, positions, w, roles[0])
    full = attend_full(x, positions, foreign, w, roles[1])
    assert not torch.allclose(full, own[1], rtol=1e-6, atol=1e-6)
    assert relative_error(full, own[1]) > 1e-3
