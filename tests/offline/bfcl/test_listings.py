"""Listings for evaluation and training: shuffled orders and distractor toolboxes keep
every function the question needs, stay within their size, and are reproducible."""

from __future__ import annotations

from collections import Counter

from agentstack.chat.tool_prompts import function_names
from agentstack.offline.bfcl.dataset import examples
from agentstack.offline.bfcl.listings import (
    among_distractors,
    answer_position,
    distractor_pool,
    listing_tokens,
    rotations,
    shuffled,
)


def words(text: str) -> int:
    return len(text.split())


def test_a_shuffled_listing_is_a_reproducible_permutation_that_moves_the_answer() -> None:
    pool = examples("multiple", "dev")
    positions = Counter()
    for example in pool:
        once, again = shuffled(example, 3), shuffled(example, 3)
        assert function_names(once.functions) == function_names(again.functions)
        assert sorted(function_names(once.functions)) == sorted(function_names(example.functions))
        positions[answer_position(once)] += 1
    assert len(positions) >= 3, f"the right function should land at several places: {positions}"


def test_rotations_ask_one_question_with_its_right_function_at_every_position() -> None:
    for example in examples("multiple", "dev")[:20]:
        turned = rotations(example)
        assert len(turned) == len(example.functions)
        assert sorted(answer_position(t) for t in turned) == list(range(len(example.functions)))
        for t in turned:
            assert t.id == example.id and t.messages == example.messages
            assert sorted(function_names(t.functions)) == sorted(function_names(example.functions))


def test_a_toolbox_holds_the_questions_functions_among_others_within_its_size() -> None:
    pool = distractor_pool()
    assert len({f["name"] for f in pool}) == len(pool) > 100
    for example in examples("multiple", "dev")[:10]:
        own = function_names(example.functions)
        boxed = among_distractors(example, pool, 800, words, seed=0)
        names = function_names(boxed.functions)
        assert set(own) <= set(names) and len(names) == len(set(names)) > len(own) + 5
        assert listing_tokens(boxed.functions, words) <= 800
        assert listing_tokens(boxed.functions, words) > 800 - max(listing_tokens([f], words) for f in pool) - 1
        assert function_names(among_distractors(example, pool, 800, words, seed=0).functions) == names
        assert function_names(among_distractors(example, pool, 800, words, seed=1).functions) != names


def test_a_toolbox_smaller_than_the_questions_functions_keeps_them_all() -> None:
    example = examples("multiple", "dev")[0]
    boxed = among_distractors(example, distractor_pool(), 1, words, seed=0)
    assert function_names(boxed.functions) == function_names(example.functions)
