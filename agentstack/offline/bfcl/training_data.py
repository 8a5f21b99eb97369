"""Chat examples for the tool roles, built from the train part of the trained categories.

Every role sees the same examples; only the tail of the chat differs (see
`agentstack.chat.tool_prompts`). The recipe teaches reading, not position (after Hammer's
function masking and irrelevance augmentation), all from the train split:

- every listing is shuffled, so the right function sits at every position;
- the question's functions sit among unrelated ones (a few, or a long toolbox of
  `LONG_TOOLBOX_TOKENS` in `LONG_SHARE` of the examples), so the roles read the contexts
  the shared cache is for;
- in `MASKED_SHARE` of the examples the question's function and parameter names are
  random identifiers, so the choice must come from the descriptions (distractors keep
  their names, which leaves a cue; the shipped adapters were trained so);
- `IRRELEVANT_SHARE` more examples list everything but the question's functions: the
  selector and `single` answer `none` (the tool-calling path then answers in words).

BFCL's trained categories always have a function to call, so irrelevance comes only
from removing it; nothing from evaluation-only categories is used.
"""

from __future__ import annotations

import copy
import enum
import json
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.chat.tool_prompts import (
    NONE_SELECTED,
    Call,
    arguments_messages,
    calls_text,
    function_names,
    selection_text,
    selector_messages,
    single_messages,
)
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples
from agentstack.offline.bfcl.listings import distractor_pool, listing_tokens

DATA_SEED = 7
# Training on a 2-core CPU runs at 100-170 tokens/s, so each role sees a fixed sample of
# the train split, the same BFCL ids for every role.
TRAIN_PER_CATEGORY = {"simple_python": 100, "multiple": 50, "parallel": 50, "parallel_multiple": 50}
MASKED_SHARE = 0.2
IRRELEVANT_SHARE = 0.2
LONG_SHARE = 0.3
# Long toolboxes span the sizes evaluated (`eval bfcl --toolbox 1500` counts real tokens;
# the estimate here runs about 5% above the packaged tokenizer's count).
LONG_TOOLBOX_TOKENS = (700, 1650)
MAX_FEW_DISTRACTORS = 3

Function = dict[str, Any]


def approx_tokens(text: str) -> int:
    """About the packaged tokenizer's count for listings (4 characters a token), so the
    data builds without loading a model."""
    return len(text) // 4 + 1


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


@dataclass(frozen=True, slots=True)
class Listed:
    """One training question as a role sees it: the functions listed, the calls to make."""

    id: str
    messages: list[dict[str, Any]]
    functions: list[Function]
    calls: list[Call]


def _identifier(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choice(string.ascii_lowercase) for _ in range(7))


def _masked(functions: list[Function], calls: list[Call], rng: random.Random) -> tuple[list[Function], list[Call]]:
    """Every function and parameter name replaced by a random identifier, in the listing
    and in the calls alike; descriptions, types and values stay."""
    renamed: dict[str, tuple[str, dict[str, str]]] = {}
    masked = []
    for function in functions:
        function = copy.deepcopy(function)
        properties = (function.get("parameters") or {}).get("properties") or {}
        params = {p: _identifier(rng, "p_") for p in properties}
        renamed[function["name"]] = (_identifier(rng, "fn_"), params)
        function["name"] = renamed[function["name"]][0]
        if properties:
            function["parameters"]["properties"] = {params[p]: s for p, s in properties.items()}
            required = function["parameters"].get("required")
            if required:
                function["parameters"]["required"] = [params.get(p, p) for p in required]
        masked.append(function)
    masked_calls = []
    for call in calls:
        name, params = renamed[call["name"]]
        masked_calls.append({"name": name, "arguments": {params.get(k, k): v for k, v in call["arguments"].items()}})
    return masked, masked_calls


def _with_distractors(functions: list[Function], pool: Sequence[Function], rng: random.Random,
                      *, unlike: Sequence[Function]) -> list[Function]:
    """`functions` and unrelated ones: none named like `functions` or `unlike` (the
    question's own functions, before masking renamed them)."""
    names = set(function_names(functions)) | set(function_names(unlike))
    candidates = [f for f in rng.sample(list(pool), min(len(pool), 60)) if f["name"] not in names]
    listed = list(functions)
    if rng.random() < LONG_SHARE:
        budget = rng.randint(*LONG_TOOLBOX_TOKENS)
        size = listing_tokens(listed, approx_tokens)
        for function in candidates:
            cost = listing_tokens([function], approx_tokens) + 1
            if size + cost > budget:
                break
            listed.append(function)
            size += cost
    else:
        listed += candidates[:rng.randint(0, MAX_FEW_DISTRACTORS)]
    return listed


def listed_examples(pool: list[BfclExample], seed: int = DATA_SEED) -> list[Listed]:
    """The recipe applied to `pool`: each question once with its calls, and a share of them
    again without their functions (no call applies)."""
    distractors = distractor_pool()
    out: list[Listed] = []
    for example in pool:
        rng = random.Random(f"{seed}:{example.id}")
        functions, calls = list(example.functions), example.reference_calls()
        if rng.random() < MASKED_SHARE:
            functions, calls = _masked(functions, calls, rng)
        listed = _with_distractors(functions, distractors, rng, unlike=example.functions)
        rng.shuffle(listed)
        out.append(Listed(example.id, example.messages, listed, calls))
        if rng.random() < IRRELEVANT_SHARE:
            own = set(function_names(functions))
            rest = [f for f in listed if f["name"] not in own]
            if not rest:
                rest = [f for f in rng.sample(distractors, 3) if f["name"] not in own]
            out.append(Listed(f"{example.id}:none", example.messages, rest, []))
    return out


def role_chats(role: ToolRole, pool: list[BfclExample], seed: int = DATA_SEED) -> list[dict]:
    """`{"id", "messages"}` records for one role, in a fixed order."""
    chats: list[dict] = []
    for item in listed_examples(pool, seed):
        if role is ToolRole.ARGUMENTS:
            for name in dict.fromkeys(c["name"] for c in item.calls):
                prompt = arguments_messages(item.messages, item.functions, name)
                reply = calls_text([c for c in item.calls if c["name"] == name])
                chats.append({"id": f"{item.id}:{name}", "messages": [*prompt, _assistant(reply)]})
            continue
        if role is ToolRole.SELECTOR:
            prompt = selector_messages(item.messages, item.functions)
            reply = selection_text([c["name"] for c in item.calls]) if item.calls else NONE_SELECTED
        else:
            prompt = single_messages(item.messages, item.functions)
            reply = calls_text(item.calls) if item.calls else NONE_SELECTED
        chats.append({"id": item.id, "messages": [*prompt, _assistant(reply)]})
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
