"""The held-out set: large enough, every kind present, and disjoint from training by test."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from routers.offline.heldout import (
    FACTS,
    HELDOUT_CAPITALS,
    HELDOUT_ITEMS,
    HELDOUT_KINDS,
    HELDOUT_NAMES,
    HELDOUT_OPPOSITES,
    IN_TEMPLATE_KINDS,
    OUT_OF_TEMPLATE_KINDS,
    heldout_tasks,
    template_part,
    training_prompts,
)
from routers.offline.tasks import (
    CAPITALS,
    ITEMS,
    NAMES,
    OPPOSITES,
    Problem,
    Task,
    gate_tasks,
    worked_reply,
)


@pytest.fixture(scope="module")
def heldout() -> list[Task]:
    return heldout_tasks()


def test_size_and_kinds(heldout: list[Task]) -> None:
    counts = Counter(t.kind for t in heldout)
    assert len(heldout) >= 200
    assert set(counts) == set(HELDOUT_KINDS)
    assert sum(counts[k] for k in OUT_OF_TEMPLATE_KINDS) >= 100
    assert {template_part(k) for k in IN_TEMPLATE_KINDS} == {"in-template"}
    assert {template_part(k) for k in OUT_OF_TEMPLATE_KINDS} == {"out-of-template"}


def test_same_seed_same_set(heldout: list[Task]) -> None:
    again = heldout_tasks()
    assert [(t.id, t.messages, t.answer) for t in heldout] == [(t.id, t.messages, t.answer) for t in again]
    assert len({t.id for t in heldout}) == len(heldout)


def test_no_training_prompt_or_problem_is_held_out(heldout: list[Task]) -> None:
    """Against the gate's training prompts and the shipped reasoner's problems: no prompt
    text, no whole conversation, and for arithmetic no (template, numbers) in common."""
    train = gate_tasks("train")
    seen = training_prompts()
    assert {t.prompt for t in train} <= seen.texts
    for task in heldout:
        assert task.prompt not in seen.texts, task.id
        assert all(m["content"] not in seen.texts for m in task.messages if m["role"] == "user"), task.id
        assert task.signature is None or task.signature not in seen.signatures, task.id
    assert not {str(t.messages) for t in train} & {str(t.messages) for t in heldout}
    arithmetic = [t for t in heldout if t.scoring == "number"]
    assert arithmetic and all(t.signature is not None for t in arithmetic)


def test_no_question_repeats_within_a_kind(heldout: list[Task]) -> None:
    for kind in HELDOUT_KINDS:
        tasks = [t for t in heldout if t.kind == kind]
        assert len({str(t.messages) for t in tasks}) == len(tasks), kind
        signatures = [t.signature for t in tasks if t.signature is not None]
        assert len(set(signatures)) == len(signatures), kind


def test_out_of_template_pools_share_nothing_with_training() -> None:
    assert not set(HELDOUT_NAMES) & set(NAMES)
    assert not set(HELDOUT_ITEMS) & set(ITEMS)
    assert not {c for c, _ in HELDOUT_CAPITALS} & {c for c, _ in CAPITALS}
    assert not {city for _, city in HELDOUT_CAPITALS} & {city for _, city in CAPITALS}
    assert not {w for w, _ in HELDOUT_OPPOSITES} & {w for pair in OPPOSITES for w in pair}
    assert len({q for q, _ in FACTS}) == len(FACTS)


def test_out_of_template_word_problems_use_their_own_names_and_items(heldout: list[Task]) -> None:
    for task in (t for t in heldout if t.kind == "ood-arith"):
        words = set(re.findall(r"[A-Za-z]+", task.prompt))
        assert not words & set(NAMES) and not words & set(ITEMS), task.prompt
        assert task.signature is not None and task.signature[0].startswith("ood:")
        assert int(task.answer) >= 0


def test_out_of_template_answers_are_right(heldout: list[Task]) -> None:
    """Spot checks recomputed from the prompt text, not from the generator."""
    factors = {("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("days", "hours"): 24,
               ("weeks", "days"): 7, ("years", "months"): 12, ("meters", "centimeters"): 100,
               ("kilometers", "meters"): 1000, ("kilograms", "grams"): 1000, ("feet", "inches"): 12,
               ("liters", "milliliters"): 1000, ("yards", "feet"): 3}
    for task in (t for t in heldout if t.kind == "units"):
        n = int(re.findall(r"\d+", task.prompt)[0])
        words = set(re.findall(r"[a-z]+", task.prompt))
        [factor] = [f for (many, small), f in factors.items() if {many, small} <= words]
        assert int(task.answer) == n * factor, task.prompt
    checked = 0
    for task in (t for t in heldout if t.signature and t.signature[0] in ("ood:shop-sold", "ood:class")):
        a, b = map(int, re.findall(r"\d+", task.prompt))
        assert int(task.answer) == a - b
        checked += 1
    assert checked


def test_multi_turn_tasks_carry_a_previous_exchange(heldout: list[Task]) -> None:
    dialogues = [t for t in heldout if t.kind == "multi-turn"]
    assert {t.scoring for t in dialogues} == {"number", "text"}
    for task in dialogues:
        assert [m["role"] for m in task.messages] == ["user", "assistant", "user"]


def test_every_held_out_task_accepts_its_own_answer(heldout: list[Task]) -> None:
    """The trained answer format scores right and an off-by-one scores wrong, for every
    non-tool task: no held-out answer is unreachable under strict scoring."""
    for task in heldout:
        if task.scoring == "number":
            reply = worked_reply(Problem(task.prompt, ("Start.",), int(task.answer), ("x", ())), think=True)
            assert task.score(reply) and not task.score(f"Answer: {int(task.answer) + 1}"), task.id
        elif task.scoring == "text":
            assert task.score(f"{task.answer}.") and not task.score(f"Not {task.answer}."), task.id
