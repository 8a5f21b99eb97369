"""Prefix index: roles share block hashes, tenants and (non-shared) adapters never do."""

from __future__ import annotations

from cache.index import PrefixHasher

HASHER = PrefixHasher(block_size=4, namespace="model|decomposed")
PROMPT = list(range(100, 111))  # 11 tokens: two full blocks and a partial one


def test_only_full_blocks_are_hashed() -> None:
    assert len(HASHER.block_hashes(PROMPT, salt="t")) == 2
    assert HASHER.block_hashes(PROMPT[:3], salt="t") == []


def test_prompts_share_hashes_up_to_the_first_differing_block() -> None:
    other = PROMPT[:4] + [999] + PROMPT[5:]
    a, b = HASHER.block_hashes(PROMPT, salt="t"), HASHER.block_hashes(other, salt="t")
    assert a[0] == b[0]
    assert a[1] != b[1]


def test_a_block_hash_depends_on_everything_before_it() -> None:
    shifted = [7] + PROMPT[1:]
    assert HASHER.block_hashes(PROMPT, salt="t")[1] != HASHER.block_hashes(shifted, salt="t")[1]


def test_shared_modes_do_not_key_by_adapter_but_non_shared_does() -> None:
    shared = HASHER.block_hashes(PROMPT, salt="t")
    assert HASHER.block_hashes(PROMPT, salt="t", adapter="shout") != shared
    assert HASHER.block_hashes(PROMPT, salt="t", adapter="shout") != HASHER.block_hashes(
        PROMPT, salt="t", adapter="json_answer"
    )


def test_tenant_salt_and_namespace_separate_identical_prompts() -> None:
    assert HASHER.block_hashes(PROMPT, salt="key-a") != HASHER.block_hashes(PROMPT, salt="key-b")
    other_model = PrefixHasher(block_size=4, namespace="other|decomposed")
    assert other_model.block_hashes(PROMPT, salt="t") != HASHER.block_hashes(PROMPT, salt="t")


def test_fields_are_length_prefixed() -> None:
    assert HASHER.root(salt="ab", adapter="c") != HASHER.root(salt="a", adapter="bc")
    assert HASHER.root(salt="t", adapter="") != HASHER.root(salt="t")
