"""Scoring goes through bfcl-eval's own AST checker."""

from __future__ import annotations

import copy

from agentstack.chat.tool_prompts import function_names
from agentstack.offline.bfcl.checker import check
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, examples
from agentstack.offline.bfcl.listings import among_distractors, distractor_pool, shuffled
from agentstack.offline.bfcl.training_data import approx_tokens


def test_reference_answers_pass_and_altered_ones_fail() -> None:
    example = examples("multiple", "dev")[0]
    calls = example.reference_calls()
    assert check(example, calls).correct
    wrong_name = [{**calls[0], "name": example.functions[-1]["name"] + "_x"}]
    assert not check(example, wrong_name).correct
    altered = copy.deepcopy(calls)
    param = next(iter(altered[0]["arguments"]))
    altered[0]["arguments"][param] = "surely not this"
    verdict = check(example, altered)
    assert not verdict.correct and verdict.error


def test_parallel_calls_are_scored_in_any_order() -> None:
    example = examples("parallel", "dev")[0]
    calls = example.reference_calls()
    assert len(calls) > 1
    assert check(example, list(reversed(calls))).correct
    assert not check(example, calls[:1]).correct


def test_irrelevance_wants_no_call() -> None:
    example = examples("irrelevance")[0]
    assert check(example, []).correct
    name = example.functions[0]["name"]
    assert not check(example, [{"name": name, "arguments": {}}]).correct


def test_the_right_calls_pass_wherever_the_listing_puts_their_function() -> None:
    """A toolbox or shuffled listing moves the entry's function from first place, where
    BFCL's checker reads a simple entry's function; the score must not move with it."""
    pool, moved = distractor_pool(), 0
    for category in ("simple_python", "multiple", "live_simple"):
        for entry in examples(category, "dev" if category in TRAIN_CATEGORIES else "all")[:5]:
            listing = shuffled(among_distractors(entry, pool, 1500, approx_tokens, seed=0), seed=1)
            calls = entry.reference_calls()
            moved += function_names(listing.functions)[0] != calls[0]["name"]
            assert check(listing, calls).correct, entry.id
    assert moved >= 10
