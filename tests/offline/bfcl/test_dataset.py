"""The committed BFCL split and the training data built from it."""

from __future__ import annotations

from collections import Counter

import pytest

from agentstack.offline.bfcl.dataset import (
    DEV_ROUNDS,
    TRAIN_CATEGORIES,
    UnknownCategory,
    examples,
    load_category,
    load_split,
    make_split,
)
from agentstack.offline.bfcl.listings import listing_tokens
from agentstack.offline.bfcl.training_data import (
    LONG_TOOLBOX_TOKENS,
    ToolRole,
    approx_tokens,
    listed_examples,
    role_chats,
    train_examples,
)
from agentstack.chat.tool_prompts import NONE_SELECTED, function_names, parse_calls, parse_selection


@pytest.mark.parametrize("category", TRAIN_CATEGORIES)
def test_no_id_is_both_train_and_dev(category: str) -> None:
    train = {e.id for e in examples(category, "train")}
    dev = {e.id for e in examples(category, "dev")}
    committed = load_split().dev[category]
    assert len(dev) == len(committed) == sum(DEV_ROUNDS), "every committed dev id must exist in BFCL's data"
    assert load_split().dev == make_split().dev, "the committed split is the documented draw"
    assert not train & dev
    assert train | dev == {e.id for e in load_category(category)}


def test_training_uses_only_train_ids_of_trained_categories() -> None:
    dev = {i for ids in load_split().dev.values() for i in ids}
    chosen = train_examples()
    assert {e.category for e in chosen} == set(TRAIN_CATEGORIES)
    assert not {e.id for e in chosen} & dev
    assert [e.id for e in chosen] == [e.id for e in train_examples()], "the sample is fixed"


def test_every_single_turn_category_loads_and_others_are_refused() -> None:
    assert len(load_category("irrelevance")) > 0
    assert load_category("simple_java")[0].ground_truth
    with pytest.raises(UnknownCategory, match="multi_turn_base"):
        load_category("multi_turn_base")


def test_role_data_teaches_the_reference_answer() -> None:
    pool = [e for e in train_examples() if e.category == "parallel_multiple"][:8]
    items = {i.id: i for i in listed_examples(pool)}
    for example in pool:
        item = items[example.id]
        assert len(item.calls) == len(example.reference_calls()) and set(function_names(item.functions)) >= {
            c["name"] for c in item.calls}
    for chat in role_chats(ToolRole.SELECTOR, pool):
        item = items[chat["id"]]
        expected = list(dict.fromkeys(c["name"] for c in item.calls)) or []
        assert parse_selection(chat["messages"][-1]["content"], item.functions) == expected
    for chat in role_chats(ToolRole.ARGUMENTS, pool):
        item_id, name = chat["id"].rsplit(":", 1)
        item = items[item_id]
        assert chat["messages"][-2] == {"role": "user", "content": f"Call {name}."}
        calls = parse_calls(chat["messages"][-1]["content"], item.functions)
        assert calls == [c for c in item.calls if c["name"] == name]


def test_listings_put_the_answer_everywhere_among_distractors_some_long() -> None:
    items = [i for i in listed_examples(train_examples()) if i.calls]
    positions = Counter(function_names(i.functions).index(i.calls[0]["name"]) for i in items)
    assert len(positions) >= 6 and positions[0] < 0.5 * len(items), positions
    sizes = [listing_tokens(i.functions, approx_tokens) for i in items]
    shortest, longest = LONG_TOOLBOX_TOKENS
    long = [s for s in sizes if s >= 0.8 * shortest]
    assert 0.2 * len(items) < len(long) < 0.4 * len(items) and max(sizes) <= longest + 400
    assert sum(s >= 0.8 * longest for s in sizes) > 0.05 * len(items)
    assert all(len(set(function_names(i.functions))) == len(i.functions) for i in items)


def test_masked_examples_name_nothing_the_question_could_match() -> None:
    pool = train_examples()
    items = {i.id: i for i in listed_examples(pool)}
    masked = [e for e in pool if items[e.id].calls and items[e.id].calls[0]["name"].startswith("fn_")]
    assert 0.1 * len(pool) < len(masked) < 0.3 * len(pool)
    for example in masked:
        item = items[example.id]
        assert not set(function_names(example.functions)) & set(function_names(item.functions))
        by_name = {f["name"]: f for f in item.functions}
        for call in item.calls:
            properties = by_name[call["name"]]["parameters"].get("properties", {})
            assert set(call["arguments"]) <= set(properties)
            assert all(key.startswith("p_") for key in call["arguments"])


def test_irrelevant_examples_list_everything_but_the_questions_functions() -> None:
    pool = train_examples()
    by_id = {e.id: e for e in pool}
    negatives = [c for c in role_chats(ToolRole.SINGLE, pool) if c["id"].endswith(":none")]
    assert 0.1 * len(pool) < len(negatives) < 0.3 * len(pool)
    assert all(c["messages"][-1]["content"] == NONE_SELECTED for c in negatives)
    selector = [c for c in role_chats(ToolRole.SELECTOR, pool) if c["id"].endswith(":none")]
    assert [c["id"] for c in selector] == [c["id"] for c in negatives]
    assert not [c for c in role_chats(ToolRole.ARGUMENTS, pool) if ":none" in c["id"]]
    for chat in negatives:
        own = set(function_names(by_id[chat["id"].removesuffix(":none")].functions))
        listed = chat["messages"][0]["content"]
        assert "You can call these functions" in listed
        assert not any(f"\n{name}:" in listed for name in own)


@pytest.mark.parametrize("category", [*TRAIN_CATEGORIES, "live_simple"])
def test_reference_answers_pass_bfcls_checker(category: str) -> None:
    """Training targets are answers the checker accepts, nested objects and required
    parameters included (BFCL has a few entries whose answer omits a required parameter)."""
    from agentstack.offline.bfcl.checker import check

    part = "train" if category in TRAIN_CATEGORIES else "all"
    pool = examples(category, part)
    refused = [e.id for e in pool if not check(e, e.reference_calls()).correct]
    assert len(refused) <= len(pool) // 100, refused
