"""Chat examples for the tool roles, built from the train part of the trained categories.

Every role sees the same examples; only the tail of the chat differs (see
`agentstack.chat.tool_prompts`). BFCL's trained categories always have a function to call, so
`selector` and `single` also learn to say `none` from questions paired with another
example's functions — still train data only, nothing from evaluation-only categories.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Iterator
from pathlib import Path

from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples
from agentstack.chat.tool_prompts import (
    NONE_SELECTED,
    arguments_messages,
    calls_text,
    function_names,
    selection_text,
    selector_messages,
    single_messages,
)

NEGATIVE_SHARE = 0.1
DATA_SEED = 7
# Training on a 2-core CPU runs at 100-170 tokens/s, so each role sees a fixed sample of
# the train split (~65k tokens), the same BFCL ids for every role.
TRAIN_PER_CATEGORY = {"simple_python": 100, "multiple": 50, "parallel": 50, "parallel_multiple": 50}


class ToolRole(str, enum.Enum):
    SELECTOR = "selector"
    ARGUMENTS = "arguments"
    SINGLE = "single"


def train_examples(seed: int = DATA_SEED) -> list[BfclExample]:
    """The fixed training sample: per trained category, a seeded draw from its train split."""
    rng = random.Random(seed)
    chosen: list[BfclExample] = []
    for category in TRAIN_CATEGORIES:
        pool = examples(category, "train")
        picked = set(rng.sample(range(len(pool)), min(TRAIN_PER_CATEGORY[category], len(pool))))
        chosen += [e for i, e in enumerate(pool) if i in picked]
    return chosen


def _negatives(pool: list[BfclExample], rng: random.Random) -> Iterator[tuple[BfclExample, list[dict]]]:
    """Questions paired with functions of an unrelated example (no name in common)."""
    for example in rng.sample(pool, int(len(pool) * NEGATIVE_SHARE)):
        names = set(function_names(example.functions))
        while True:
            other = rng.choice(pool)
            if not names & set(function_names(other.functions)):
                yield example, other.functions
                break


def role_chats(role: ToolRole, pool: list[BfclExample], seed: int = DATA_SEED) -> list[dict]:
    """`{"id", "messages"}` records for one role, in a fixed order."""
    chats: list[dict] = []
    for example in pool:
        calls = example.reference_calls()
        if role is ToolRole.ARGUMENTS:
            for name in dict.fromkeys(c["name"] for c in calls):
                prompt = arguments_messages(example.messages, example.functions, name)
                reply = calls_text([c for c in calls if c["name"] == name])
                chats.append({"id": f"{example.id}:{name}", "messages": [*prompt, _assistant(reply)]})
            continue
        if role is ToolRole.SELECTOR:
            prompt, reply = selector_messages(example.messages, example.functions), selection_text(
                [c["name"] for c in calls]
            )
        else:
            prompt, reply = single_messages(example.messages, example.functions), calls_text(calls)
        chats.append({"id": example.id, "messages": [*prompt, _assistant(reply)]})
    if role is not ToolRole.ARGUMENTS:
        rng = random.Random(seed)
        for example, functions in _negatives(pool, rng):
            prompt = selector_messages(example.messages, functions)
            chats.append({"id": f"{example.id}:none", "messages": [*prompt, _assistant(NONE_SELECTED)]})
    return chats


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def write_role_data(role: ToolRole, out: Path) -> int:
    """Write one role's JSONL training file; returns the number of examples."""
    chats = role_chats(role, train_examples())
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for chat in chats:
            handle.write(json.dumps(chat) + "\n")
    return len(chats)
