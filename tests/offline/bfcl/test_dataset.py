"""The committed BFCL split and the entries loaded from bfcl-eval (the training data built
from them: test_training_data.py)."""

from __future__ import annotations

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


@pytest.mark.parametrize("category", TRAIN_CATEGORIES)
def test_no_id_is_both_train_and_dev(category: str) -> None:
    train = {e.id for e in examples(category, "train")}
    dev = {e.id for e in examples(category, "dev")}
    committed = load_split().dev[category]
    assert len(dev) == len(committed) == sum(DEV_ROUNDS), "every committed dev id must exist in BFCL's data"
    assert load_split().dev == make_split().dev, "the committed split is the documented draw"
    assert not train & dev
    assert train | dev == {e.id for e in load_category(category)}


@pytest.mark.parametrize("category", TRAIN_CATEGORIES)
def test_an_earlier_round_of_the_split_keeps_its_train_and_dev(category: str) -> None:
    """A consumer pinned to the first round (the gate's measured prompts) sees the ids it
    was drawn from: round-one dev stays dev, the later rounds count as its train."""
    first = {e.id for e in examples(category, "dev", dev_rounds=1)}
    assert len(first) == DEV_ROUNDS[0]
    assert first < {e.id for e in examples(category, "dev")}
    later = {e.id for e in examples(category, "dev")} - first
    assert later <= {e.id for e in examples(category, "train", dev_rounds=1)}


def test_every_single_turn_category_loads_and_others_are_refused() -> None:
    assert len(load_category("irrelevance")) > 0
    assert load_category("simple_java")[0].ground_truth
    with pytest.raises(UnknownCategory, match="multi_turn_base"):
        load_category("multi_turn_base")


@pytest.mark.parametrize("category", [*TRAIN_CATEGORIES, "live_simple"])
def test_reference_answers_pass_bfcls_checker(category: str) -> None:
    """Training targets are answers the checker accepts, nested objects and required
    parameters included (BFCL has a few entries whose answer omits a required parameter)."""
    from agentstack.offline.bfcl.checker import check

    part = "train" if category in TRAIN_CATEGORIES else "all"
    pool = examples(category, part)
    refused = [e.id for e in pool if not check(e, e.reference_calls()).correct]
    assert len(refused) <= len(pool) // 100, refused
