"""The committed BFCL split and the training data built from it."""

from __future__ import annotations

import pytest

from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, UnknownCategory, examples, load_category, load_split
from agentstack.offline.bfcl.training_data import ToolRole, role_chats, train_examples
from agentstack.chat.tool_prompts import NONE_SELECTED, function_names, parse_calls, parse_selection


@pytest.mark.parametrize("category", TRAIN_CATEGORIES)
def test_no_id_is_both_train_and_dev(category: str) -> None:
    train = {e.id for e in examples(category, "train")}
    dev = {e.id for e in examples(category, "dev")}
    committed = load_split().dev[category]
    assert len(dev) == len(committed) == 25, "every committed dev id must exist in BFCL's data"
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
    pool = [e for e in train_examples() if e.category == "parallel_multiple"][:5]
    for example, chat in zip(pool, role_chats(ToolRole.SELECTOR, pool)):
        names = [c["name"] for c in example.reference_calls()]
        assert parse_selection(chat["messages"][-1]["content"], example.functions) == list(dict.fromkeys(names))
    for chat in role_chats(ToolRole.ARGUMENTS, pool):
        example = next(e for e in pool if chat["id"].startswith(e.id + ":"))
        name = chat["id"].split(":", 1)[1]
        assert chat["messages"][-2] == {"role": "user", "content": f"Call {name}."}
        calls = parse_calls(chat["messages"][-1]["content"], example.functions)
        assert calls == [c for c in example.reference_calls() if c["name"] == name]


def test_negative_examples_pair_a_question_with_unrelated_functions() -> None:
    pool = train_examples()
    negatives = [c for c in role_chats(ToolRole.SINGLE, pool) if c["id"].endswith(":none")]
    assert negatives and all(c["messages"][-1]["content"] == NONE_SELECTED for c in negatives)
    by_id = {e.id: e for e in pool}
    for chat in negatives[:20]:
        own = set(function_names(by_id[chat["id"].removesuffix(":none")].functions))
        listed = chat["messages"][0]["content"]
        assert not any(f"\n{name}:" in listed for name in own)
