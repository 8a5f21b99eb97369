"""The tool roles' training data: train ids only, and a mix that leaves no shortcut.

Each test reads the generated data (listings, targets, the chats a role trains on) and
fails if a shortcut the recipe's adapters once learned comes back: `none` following the
listing's size, random-looking names marking the answer, long toolboxes meaning `none`,
or a `none` target while a function that answers is still listed.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agentstack.chat.tool_prompts import (
    NONE_SELECTED,
    TOOLS_PREAMBLE,
    function_names,
    parse_calls,
    parse_selection,
)
from agentstack.config import PACKAGE_DATA
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples, load_split
from agentstack.offline.bfcl.evaluator_requests import EVALUATOR_CATEGORY, EVALUATORS
from agentstack.offline.bfcl.listings import distractor_pool, listing_tokens
from agentstack.offline.bfcl.training_data import (
    COMPOSED_SHARE,
    DATA_SEED,
    EVALUATOR_REQUESTS,
    LONG_TOOLBOX_TOKENS,
    MASKED_SHARE,
    Listed,
    ToolRole,
    approx_tokens,
    composed_examples,
    listed_examples,
    role_chats,
    role_mix,
    train_examples,
    unrelated_functions,
    write_role_data,
)

MASKED_FUNCTION = re.compile(r"fn_[a-z]{7}")
MASKED_PARAMETER = re.compile(r"p_[a-z]{7}")
# How far a size bucket's share of `none` may sit from the role's overall share.
NONE_SHARE_TOLERANCE = 0.04
MIN_BUCKET = 20


@pytest.fixture(scope="module")
def pool() -> list[BfclExample]:
    return train_examples()


@pytest.fixture(scope="module")
def items(pool: list[BfclExample]) -> list[Listed]:
    return listed_examples(pool)


@pytest.fixture(scope="module")
def by_id(pool: list[BfclExample]) -> dict[str, BfclExample]:
    """Every question the data asks, by id: the sampled entries and the composed requests."""
    unrelated = {e.id: unrelated_functions(e, distractor_pool()) for e in pool}
    return {e.id: e for e in pool} | {c.example.id: c.example for c in composed_examples(pool, unrelated, DATA_SEED)}


def listing_of(chat: dict) -> str:
    system = chat["messages"][0]["content"]
    assert TOOLS_PREAMBLE in system
    return system.split(TOOLS_PREAMBLE, 1)[1].strip("\n")


def functions_listed(chat: dict) -> int:
    """Signature lines of the listing a role reads (parameter lines are indented)."""
    return sum(1 for line in listing_of(chat).splitlines() if line and not line.startswith(" "))


def share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)


def core_name(name: str) -> frozenset[str]:
    """A function's name as words, without case or generic verbs: `calculate_BMI` and
    `calculate_bmi`, or `find_concert` and `concert_info.get`, are one function."""
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())
    return frozenset(w for w in words if w not in {"calculate", "calc", "get", "find", "compute", "fetch", "info",
                                                    "search", "math"})


def test_training_uses_only_train_ids_of_trained_categories(pool: list[BfclExample], items: list[Listed]) -> None:
    """BFCL entries come from the trained categories' train split; the rest of the sample
    is the made-up evaluator requests, listing only the made-up evaluators."""
    dev = {i for ids in load_split().dev.values() for i in ids}
    bfcl = [e for e in pool if e.category != EVALUATOR_CATEGORY]
    assert {e.category for e in bfcl} == set(TRAIN_CATEGORIES)
    assert not {e.id for e in bfcl} & dev
    assert len(pool) - len(bfcl) == EVALUATOR_REQUESTS
    assert [e.id for e in pool] == [e.id for e in train_examples()], "the sample is fixed"
    assert {p for i in items for p in i.parts or [i.id.removesuffix(":none")]} == {e.id for e in pool}
    evaluators = [e.function() for e in EVALUATORS]
    train_functions = {f["name"] for c in TRAIN_CATEGORIES for e in examples(c, "train") for f in e.functions}
    train_functions |= set(function_names(evaluators))
    train_descriptions = {f.get("description") for c in TRAIN_CATEGORIES for e in examples(c, "train")
                          for f in e.functions} | {f["description"] for f in evaluators}
    for item in items:
        assert {f.get("description") for f in item.functions} <= train_descriptions
        if not item.masked:
            assert set(function_names(item.functions)) <= train_functions


def test_the_data_is_reproducible_and_follows_its_seed(pool: list[BfclExample], items: list[Listed]) -> None:
    again = listed_examples(pool)
    assert [(i.id, i.functions, i.calls) for i in again] == [(i.id, i.functions, i.calls) for i in items]
    other = listed_examples(pool, seed=8)
    assert [function_names(i.functions) for i in other] != [function_names(i.functions) for i in items]


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


def test_listings_put_the_answer_everywhere_among_distractors_some_long(items: list[Listed]) -> None:
    answered = [i for i in items if i.calls]
    positions = Counter(function_names(i.functions).index(i.calls[0]["name"]) for i in answered)
    assert len(positions) >= 6 and positions[0] < 0.5 * len(answered), positions
    sizes = [listing_tokens(i.functions, approx_tokens) for i in answered]
    shortest, longest = LONG_TOOLBOX_TOKENS
    long = [s for s in sizes if s >= 0.8 * shortest]
    assert 0.2 * len(answered) < len(long) < 0.4 * len(answered) and max(sizes) <= longest + 400
    assert sum(s >= 0.8 * longest for s in sizes) > 0.05 * len(answered)
    assert all(len(set(function_names(i.functions))) == len(i.functions) for i in items)


@pytest.mark.parametrize("role", [ToolRole.SELECTOR, ToolRole.SINGLE])
@pytest.mark.parametrize("size", ["functions", "tokens"])
def test_none_is_as_likely_for_every_listing_size(pool: list[BfclExample], role: ToolRole, size: str) -> None:
    """In the chats a role trains on, `none` is no more likely for one size of listing than
    overall; short listings sit at the overall share, long ones may sit below it (the
    adapters once learned "one function -> none" and "long listing -> none")."""
    chats = role_chats(role, pool)
    measure: Callable[[dict], int] = functions_listed if size == "functions" else (
        lambda chat: approx_tokens(listing_of(chat)))
    bounds = (1, 2, 4, 8) if size == "functions" else (0, 300, 600, 1100)
    overall = share([c["messages"][-1]["content"] == NONE_SELECTED for c in chats])
    assert 0.1 < overall < 0.25
    seen = 0
    for low, high in zip(bounds, (*bounds[1:], None)):
        bucket = [c for c in chats if measure(c) >= low and (high is None or measure(c) < high)]
        if len(bucket) < MIN_BUCKET:
            continue
        seen += 1
        rate = share([c["messages"][-1]["content"] == NONE_SELECTED for c in bucket])
        long = share([approx_tokens(listing_of(c)) >= 600 for c in bucket]) > 0.5
        assert rate <= overall + NONE_SHARE_TOLERANCE, (size, low, rate, overall)
        if not long:
            assert rate >= overall - NONE_SHARE_TOLERANCE, (size, low, rate, overall)
    assert seen >= 3


def test_irrelevance_copies_are_sized_like_answered_listings_not_like_their_entry(
        by_id: dict[str, BfclExample], items: list[Listed]) -> None:
    few = [i for i in items if not i.long_toolbox]
    answered, copies = [i for i in few if i.calls], [i for i in few if not i.calls]

    def bucket(item: Listed) -> int:
        return min(len(item.functions), 4)

    expected, got = Counter(map(bucket, answered)), Counter(map(bucket, copies))
    for size in expected:
        assert abs(got[size] / len(copies) - expected[size] / len(answered)) < 0.05, (size, got, expected)
    of_one = [i for i in copies if len(by_id[i.id.removesuffix(":none")].functions) == 1]
    assert len(of_one) >= 10 and share([len(i.functions) == 1 for i in of_one]) < 0.5


def test_long_toolboxes_mostly_hold_their_answer(items: list[Listed]) -> None:
    long = [i for i in items if i.long_toolbox]
    few = [i for i in items if not i.long_toolbox]
    assert all(listing_tokens(i.functions, approx_tokens) > 0.8 * LONG_TOOLBOX_TOKENS[0] for i in long)
    assert 0 < share([not i.calls for i in long]) <= share([not i.calls for i in few])
    assert share([bool(i.calls) for i in long]) >= 0.85
    assert all({c["name"] for c in i.calls} <= set(function_names(i.functions)) for i in long)


def test_irrelevance_copies_list_no_function_that_answers(pool: list[BfclExample], by_id: dict[str, BfclExample],
                                                          items: list[Listed]) -> None:
    """Nothing of the entry's own, described or named alike, is in its copy's listing; no
    answered listing has a second function alike the answer among its distractors."""
    copies = [i for i in items if not i.calls]
    assert 0.1 * len(pool) < len(copies) < 0.3 * len(pool)
    for item in items:
        example = by_id[item.id.removesuffix(":none")]
        own = {f.get("description") for f in example.functions}
        listed = [f for f in item.functions if f.get("description") not in own]
        if not item.calls:
            assert len(listed) == len(item.functions), item.id
        assert len(listed) == len(item.functions) - len(example.functions) * bool(item.calls), item.id
        if not item.masked:
            cores = {core_name(f["name"]) for f in example.functions} - {frozenset()}
            assert not cores & {core_name(f["name"]) for f in listed}, item.id


def test_copies_are_the_same_questions_with_none_in_every_role(pool: list[BfclExample]) -> None:
    negatives = [c for c in role_chats(ToolRole.SINGLE, pool) if c["id"].endswith(":none")]
    assert negatives and all(c["messages"][-1]["content"] == NONE_SELECTED for c in negatives)
    selector = [c for c in role_chats(ToolRole.SELECTOR, pool) if c["id"].endswith(":none")]
    assert [c["id"] for c in selector] == [c["id"] for c in negatives]
    assert all(c["messages"][-1]["content"] == NONE_SELECTED for c in selector)
    assert not [c for c in role_chats(ToolRole.ARGUMENTS, pool) if ":none" in c["id"]]


def arithmetic_questions(count: int) -> list[BfclExample]:
    calculator = {"name": "calculator", "description": "Evaluate an arithmetic expression, e.g. \"12 * (3 + 4)\".",
                  "parameters": {"type": "dict", "properties": {"expression": {"type": "string"}},
                                 "required": ["expression"]}}
    return [BfclExample(f"arithmetic_{i}", "simple_python",
                        [{"role": "user", "content": f"What is {i + 12} times {i + 7}?"}], [calculator],
                        [{"calculator": {"expression": [f"{i + 12} * {i + 7}"]}}]) for i in range(40)][:count]


# Functions from no BFCL entry that answer "What is 12 times 7?" as well as a calculator.
MULTIPLIERS = [
    {"name": "multiply", "description": "Multiply two numbers.",
     "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}},
    {"name": "basic_math", "description": "Add, subtract, multiply or divide two numbers.",
     "parameters": {"type": "dict", "properties": {"operation": {"type": "string"}, "a": {"type": "number"},
                                                   "b": {"type": "number"}}}},
    {"name": "evaluate", "description": "Evaluate a math expression and return its value.",
     "parameters": {"type": "dict", "properties": {"text": {"type": "string"}}}},
]


def test_an_everyday_question_is_never_none_while_a_function_for_it_is_listed() -> None:
    """"What is 12 times 7?": its copies list neither the calculator nor anything else that
    multiplies, and no answered listing offers a second way to multiply."""
    questions = arithmetic_questions(40)
    pool = [*distractor_pool(), *MULTIPLIERS]
    kept = unrelated_functions(questions[0], pool)
    assert not {"calculator", *function_names(MULTIPLIERS)} & set(function_names(kept))
    assert len(kept) > 0.9 * len(pool)
    items = listed_examples(questions, distractors=pool)
    copies = [i for i in items if not i.calls]
    assert len(copies) >= 4 and any(len(i.functions) > 1 for i in copies)
    answering = {f["description"] for f in [*MULTIPLIERS, *questions[0].functions]}
    for item in items:
        listed = [f["description"] for f in item.functions if f["description"] in answering]
        assert len(listed) == bool(item.calls), item.id


def test_masking_renames_the_whole_listing_so_no_name_marks_the_answer(by_id: dict[str, BfclExample],
                                                                         items: list[Listed]) -> None:
    masked = [i for i in items if i.masked]
    for kind in ([i for i in items if i.calls], [i for i in items if not i.calls],
                 [i for i in items if i.long_toolbox], [i for i in items if not i.long_toolbox]):
        assert abs(share([i.masked for i in kind]) - MASKED_SHARE) < 0.05
    for item in items:
        names = function_names(item.functions)
        params = [p for f in item.functions for p in (f.get("parameters") or {}).get("properties") or {}]
        if not item.masked:
            assert not any(MASKED_FUNCTION.fullmatch(n) for n in names)
            continue
        assert all(MASKED_FUNCTION.fullmatch(n) for n in names) and len(set(names)) == len(names), item.id
        assert all(MASKED_PARAMETER.fullmatch(p) for p in params), item.id
    for item in (i for i in masked if i.calls):
        example = by_id[item.id]
        by_name = {f["name"]: f for f in item.functions}
        for call, reference in zip(item.calls, example.reference_calls(), strict=True):
            function = by_name[call["name"]]
            original = next(f for f in example.functions if f["name"] == reference["name"])
            assert function["description"] == original["description"]
            properties = function["parameters"].get("properties", {})
            assert all(MASKED_PARAMETER.fullmatch(k) for k in call["arguments"])
            assert list(call["arguments"].values()) == list(reference["arguments"].values())
            renamed = dict(zip(original["parameters"]["properties"], properties, strict=True))
            assert {renamed[k]: v for k, v in reference["arguments"].items() if k in renamed}.items() <= call[
                "arguments"].items()
            assert function["parameters"].get("required", []) == [
                renamed[p] for p in original["parameters"].get("required", [])]


def test_composed_requests_ask_unrelated_questions_at_once_and_get_every_call(
        pool: list[BfclExample], by_id: dict[str, BfclExample], items: list[Listed]) -> None:
    """A request of two or three train questions is answered by all of their calls, in
    order; no part's functions could answer another part, and each entry joins one."""
    composed = [i for i in items if i.parts]
    assert abs(len(composed) - COMPOSED_SHARE * len(pool)) <= 1
    assert {len(i.parts) for i in composed} == {2, 3}
    parts = [p for i in composed for p in i.parts]
    assert len(parts) == len(set(parts)) and set(parts) <= {e.id for e in pool}
    assert {by_id[p].category for p in parts} == set(TRAIN_CATEGORIES)
    for item in composed:
        entries = [by_id[p] for p in item.parts]
        question = item.messages[0]["content"]
        assert len(item.messages) == 1 and item.messages[0]["role"] == "user"
        for entry in entries:
            asked = entry.messages[0]["content"].strip()
            assert asked[1:] in question, (item.id, asked)
        assert len(item.calls) == sum(len(e.reference_calls()) for e in entries)
        if item.masked:
            continue
        assert item.calls == [c for e in entries for c in e.reference_calls()]
        for entry in entries:
            others = [f for e in entries if e is not entry for f in e.functions]
            assert function_names(unrelated_functions(entry, others)) == function_names(others), item.id
        listed = set(function_names(item.functions))
        assert {f["name"] for e in entries for f in e.functions} <= listed


def test_composed_requests_teach_each_role_every_call(pool: list[BfclExample], items: list[Listed]) -> None:
    """The selector names every function asked for, `single` writes every call, and the
    arguments writer gets one chat per function with all of that function's calls."""
    composed = {i.id: i for i in items if i.parts}
    selector = [c for c in role_chats(ToolRole.SELECTOR, pool) if c["id"] in composed]
    single = [c for c in role_chats(ToolRole.SINGLE, pool) if c["id"] in composed]
    arguments = [c for c in role_chats(ToolRole.ARGUMENTS, pool) if c["id"].rsplit(":", 1)[0] in composed]
    assert len(selector) == len(single) == len(composed)
    for chat in selector:
        item = composed[chat["id"]]
        names = parse_selection(chat["messages"][-1]["content"], item.functions)
        assert names == list(dict.fromkeys(c["name"] for c in item.calls)) and len(names) >= 2
    for chat in single:
        item = composed[chat["id"]]
        assert parse_calls(chat["messages"][-1]["content"], item.functions) == item.calls
    assert len(arguments) == sum(len({c["name"] for c in i.calls}) for i in composed.values())
    assert any(len(parse_calls(c["messages"][-1]["content"], composed[c["id"].rsplit(":", 1)[0]].functions)) > 1
               for c in arguments)


def test_masking_also_renames_an_argument_the_listing_lacks() -> None:
    """BFCL's `parallel_multiple_26` answers with a parameter its function does not list;
    masked, no name of its calls is left as written."""
    example = next(e for e in examples("parallel_multiple", "train") if e.id == "parallel_multiple_26")
    listed = set().union(*((f.get("parameters") or {}).get("properties") or {} for f in example.functions))
    assert any(set(c["arguments"]) - listed for c in example.reference_calls())
    masked = [i for seed in range(30) for i in listed_examples([example], seed) if i.masked and i.calls]
    assert masked
    for item in masked:
        assert all(MASKED_FUNCTION.fullmatch(c["name"]) for c in item.calls)
        assert all(MASKED_PARAMETER.fullmatch(k) for c in item.calls for k in c["arguments"])


@pytest.mark.parametrize("role", list(ToolRole))
def test_the_reported_mix_counts_the_roles_data(pool: list[BfclExample], role: ToolRole) -> None:
    rows = {r.bucket: r for r in role_mix(role, pool)}
    chats = role_chats(role, pool)
    assert rows["all"].examples == len(chats)
    assert rows["all"].none == sum(c["messages"][-1]["content"] == NONE_SELECTED for c in chats)
    assert rows["few functions"].examples + rows["long toolbox"].examples == len(chats)
    function_rows = [r for name, r in rows.items() if name.endswith(("function", "functions")) and name[0].isdigit()]
    assert sum(r.examples for r in function_rows) == len(chats)
    if role is ToolRole.ARGUMENTS:
        assert rows["all"].none == 0


@pytest.mark.parametrize("role", [ToolRole.SELECTOR, ToolRole.ARGUMENTS])
def test_the_shipped_adapter_was_trained_on_the_data_the_recipe_writes(role: ToolRole, tmp_path: Path) -> None:
    """`make adapters` retrains the selector and the writer on exactly the data their model
    cards name, so a shipped figure can be reproduced from this code."""
    out = tmp_path / f"{role.value}.jsonl"
    write_role_data(role, out)
    card = (PACKAGE_DATA / "adapters" / role.value / "README.md").read_text()
    assert f"sha256 `{hashlib.sha256(out.read_bytes()).hexdigest()[:16]}`" in card
