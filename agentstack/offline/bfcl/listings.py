"""How an example's functions are listed: in another order, among distractors.

BFCL lists an entry's own few functions, usually with the right one first. A selector
that learned "the first one" or that never saw a long toolbox looks good there and fails
in use; these transforms measure both (`eval bfcl --shuffle/--rotate/--toolbox`) and teach both
(the training recipe). Each is seeded per example, so a run is reproducible and every
mode sees the same listing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from agentstack.chat.tool_prompts import function_names, render_function
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples

Function = dict[str, Any]
TokenCounter = Callable[[str], int]


def _rng(seed: int, example: BfclExample, purpose: str) -> random.Random:
    return random.Random(f"{purpose}:{seed}:{example.id}")


def shuffled(example: BfclExample, seed: int) -> BfclExample:
    functions = list(example.functions)
    _rng(seed, example, "shuffle").shuffle(functions)
    return replace(example, functions=functions)


def rotations(example: BfclExample) -> list[BfclExample]:
    """The example once per place in its listing, each a cyclic rotation of it: every
    function, the right one too, sits at every position once. Asked on the same questions,
    a difference by position is the position's alone (with one order per question, it
    is also which questions happen to sit there)."""
    functions = list(example.functions)
    return [replace(example, functions=functions[i:] + functions[:i]) for i in range(len(functions))]


def listing_tokens(functions: Sequence[Function], count: TokenCounter) -> int:
    """Tokens of the listing the tool roles read (one signature block per function)."""
    return count("\n".join(render_function(f) for f in functions))


@cache
def distractor_pool() -> tuple[Function, ...]:
    """Functions of the trained categories' train split, one per name: never an evaluated
    question's own functions. Built once per process (every category and mode of an
    evaluation lists among the same pool)."""
    pool: dict[str, Function] = {}
    for category in TRAIN_CATEGORIES:
        for example in examples(category, "train"):
            for function in example.functions:
                pool.setdefault(str(function["name"]), function)
    return tuple(pool[name] for name in sorted(pool))


def among_distractors(example: BfclExample, pool: Sequence[Function], budget_tokens: int,
                      count: TokenCounter, seed: int) -> BfclExample:
    """The example's functions at random places among unrelated ones, up to `budget_tokens`
    of listing (the example's own functions are always all there)."""
    rng = _rng(seed, example, "toolbox")
    names = set(function_names(example.functions))
    functions = list(example.functions)
    candidates = [f for f in pool if f["name"] not in names]
    rng.shuffle(candidates)
    for function in fitting(functions, candidates, budget_tokens, count):
        functions.insert(rng.randrange(len(functions) + 1), function)
    return replace(example, functions=functions)


def fitting(functions: Sequence[Function], candidates: Sequence[Function], budget_tokens: int,
            count: TokenCounter) -> list[Function]:
    """The candidates, in order, that a listing of `functions` takes on within
    `budget_tokens` (up to the first that would overflow it)."""
    size = listing_tokens(functions, count)
    added: list[Function] = []
    for function in candidates:
        cost = listing_tokens([function], count) + 1
        if size + cost > budget_tokens:
            break
        added.append(function)
        size += cost
    return added


def answer_position(example: BfclExample) -> int | None:
    """Where the first function the reference calls sits in the listing (0-based)."""
    calls = example.reference_calls()
    if not calls:
        return None
    names = function_names(example.functions)
    return names.index(calls[0]["name"]) if calls[0]["name"] in names else None
