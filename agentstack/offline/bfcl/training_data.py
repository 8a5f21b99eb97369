"""Chat examples for the tool roles, built from the train part of the trained categories.

Every role sees the same examples; only the tail of the chat differs (see
`agentstack.chat.tool_prompts`). The recipe teaches reading, not position or size (after
Hammer's function masking and irrelevance augmentation), all from the train split:

- every listing is shuffled, so the right function sits at every position;
- the question's functions sit among unrelated ones (a few, or a long toolbox of
  `LONG_TOOLBOX_TOKENS` in `LONG_SHARE` of the examples), so the roles read the contexts
  the shared cache is for;
- irrelevance copies (`IRRELEVANT_SHARE` of the few-function listings, the lower
  `LONG_IRRELEVANT_SHARE` of the long toolboxes) ask a question among unrelated functions
  only, sized like the answered listings of the same kind: the selector and `single`
  answer `none` (the tool-calling path then answers in words), and `none` says nothing
  about a listing's size;
- in `MASKED_SHARE` of each kind of example every name in the listing, function and
  parameter, is a random identifier, so the choice must come from the descriptions;
- composed requests (`COMPOSED_SHARE` of the sample) ask two or three of its questions
  at once, about unrelated functions, and are answered with all their calls: the roles
  measured stopping early (one call of two, some of the functions of a
  `parallel_multiple` request), and a request that asks several things must be counted.

Distractors are never the question's own functions nor look like them (`unrelated_functions`):
an irrelevance copy that still listed a function answering its question would teach a
wrong `none`. BFCL's trained categories always have a function to call, so irrelevance
comes only from leaving it out; nothing from evaluation-only categories is used. Beside
the BFCL sample, `EVALUATOR_REQUESTS` made-up arithmetic requests for an expression
evaluator (`evaluator_requests`) keep the irrelevance copies from teaching that arithmetic
is never a tool call. The `arguments` writer also trains on `FORMATTED_REQUESTS` made-up
requests whose values must be written as the parameter's description asks
(`formatted_requests`) and `CROSSED_REQUESTS` that ask one function about two lists,
crossed or paired off (`crossed_requests`).
"""

from __future__ import annotations

import copy
import enum
import json
import random
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
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
from agentstack.offline.bfcl.crossed_requests import crossed_examples
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples
from agentstack.offline.bfcl.evaluator_requests import evaluator_examples
from agentstack.offline.bfcl.formatted_requests import formatted_examples
from agentstack.offline.bfcl.listings import distractor_pool, fitting, listing_tokens

DATA_SEED = 7
# Training on a 2-core CPU runs at 200-350 tokens/s (bf16), so each role sees a fixed
# sample of the train split (200 / 100 / 100 / 100 ids), the same ids for every role.
TRAIN_PER_CATEGORY = {"simple_python": 200, "multiple": 100, "parallel": 100, "parallel_multiple": 100}
# Made-up arithmetic requests for an expression evaluator, about a tenth of the sample.
EVALUATOR_REQUESTS = 50
# Made-up requests for `arguments` only: values that must follow the parameter's format,
# and questions that cross two lists (or pair them off).
FORMATTED_REQUESTS = 96
CROSSED_REQUESTS = 40
MASKED_SHARE = 0.2
# Irrelevance copies per answered listing of the same kind. Long toolboxes get fewer: a
# 135M model took "long listing -> none" from copies of them, and there the answer is
# what is hard to find. At 0.2 / 0.1 the selector also refused "What is 12 times 7?"
# with a calculator listed, so the few-function share was lowered.
IRRELEVANT_SHARE = 0.15
LONG_IRRELEVANT_SHARE = 0.1
LONG_SHARE = 0.3
# Composed requests per sampled question, each of 2 or 3 single-question entries.
COMPOSED_SHARE = 0.25
COMPOSED_SIZES = (2, 3)
COMPOSED_PREFIX = "composed:"
# How a later question is joined to the ones before it.
_JOINERS = (" Also, ", " Additionally, ", "\n")
# Long toolboxes span the sizes evaluated (`eval bfcl --toolbox 1500` counts real tokens;
# the estimate here runs about 5% above the packaged tokenizer's count).
LONG_TOOLBOX_TOKENS = (700, 1650)
MAX_FEW_DISTRACTORS = 3
# Listing sizes the mix is reported and tested by: functions listed, and listing tokens.
FUNCTION_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 1), (2, 3), (4, 7), (8, None))
TOKEN_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 299), (300, 599), (600, 1099), (1100, None))

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
    """The fixed training sample: per trained category, a seeded draw from its train split,
    then the evaluator requests."""
    rng = random.Random(seed)
    chosen: list[BfclExample] = []
    for category in TRAIN_CATEGORIES:
        pool = examples(category, "train")
        picked = set(rng.sample(range(len(pool)), min(TRAIN_PER_CATEGORY[category], len(pool))))
        chosen += [e for i, e in enumerate(pool) if i in picked]
    return chosen + evaluator_examples(EVALUATOR_REQUESTS, seed)


def role_pool(role: ToolRole, seed: int = DATA_SEED) -> list[BfclExample]:
    """The questions a role trains on: the training sample, and for `arguments` the
    formatted requests (`formatted_requests`: a value written as its parameter asks) and
    the crossed ones (`crossed_requests`: as many calls as the question's lists make). The
    selector's and `single`'s data stay as they were shipped."""
    if role is not ToolRole.ARGUMENTS:
        return train_examples(seed)
    made_up = formatted_examples(FORMATTED_REQUESTS, seed) + crossed_examples(CROSSED_REQUESTS, seed)
    return train_examples(seed) + made_up


@dataclass(frozen=True, slots=True)
class Listed:
    """One training question as a role sees it: the functions listed, the calls to make
    (none for an irrelevance copy), and how the listing was made."""

    id: str
    messages: list[dict[str, Any]]
    functions: list[Function]
    calls: list[Call]
    masked: bool = False
    long_toolbox: bool = False
    parts: tuple[str, ...] = ()


# Words that say nothing about what a function is for: stopwords, and the verbs and nouns
# every function description uses.
_GENERIC_WORDS = frozenset("""
    the and for with from into over under about between within than this that these those
    what which who whom whose how when where why can will would should could does did has
    have had not yes also only its their his her your you are was were been being get find
    fetch retrieve calculate calc compute determine estimate search lookup query perform make
    return give provide using use used based given specific specified certain particular
    information info data detail details function value values number numbers two one all
    any each some list type name default optional required parameter tell show please help
    want need like know new
""".split())
# One topic: "What is 12 times 7?" is answered by a calculator and by `multiply` alike.
_ARITHMETIC_WORDS = frozenset("""
    arithmetic calculator times multiply multiplied multiplication product plus add added
    adding addition sum minus subtract subtraction difference divide divided division
    quotient expression math maths mathematical
""".split())
_STEM_CHARS = 5


@cache
def _topic_words(text: str) -> frozenset[str]:
    """A text's content words, cut to their first letters (`convert`, `converter` and
    `conversion` match); camelCase and snake_case names split into words."""
    words: set[str] = set()
    for word in re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower()):
        if word in _ARITHMETIC_WORDS:
            words.add("arithmetic")
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if len(word) >= 3 and word not in _GENERIC_WORDS:
            words.add(word[:_STEM_CHARS])
    return frozenset(words)


def _question_text(messages: Iterable[dict[str, Any]]) -> str:
    return " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


@dataclass(frozen=True, slots=True)
class _Topic:
    """What a function is about: the words of its name and of its description."""

    name: frozenset[str]
    description: frozenset[str]

    @classmethod
    def of(cls, function: Function) -> _Topic:
        return cls(_topic_words(str(function["name"])), _topic_words(str(function.get("description") or "")))


def _alike(candidate: _Topic, about: frozenset[str], own: Sequence[_Topic]) -> bool:
    """Whether `candidate` may answer a question as the entry's own functions do: half its
    name's words are `about` (the question and those functions), or it shares half the
    words of its description or of one of theirs (the shorter)."""
    if candidate.name and 2 * len(candidate.name & about) >= len(candidate.name):
        return True
    for topic in own:
        shared = len(candidate.description & topic.description)
        if shared >= 2 and 2 * shared >= min(len(candidate.description), len(topic.description)):
            return True
    return False


def unrelated_functions(example: BfclExample, pool: Sequence[Function]) -> list[Function]:
    """The functions of `pool` that may sit in `example`'s listings as distractors: not its
    own and not alike them or its question, so that neither the answered listing has a
    second right answer nor an irrelevance copy a function that answers (`12 times 7`
    with a calculator listed is never a `none`). Errs on leaving out."""
    own_names = set(function_names(example.functions))
    own = [_Topic.of(f) for f in example.functions]
    about = _topic_words(_question_text(example.messages)).union(*(t.name | t.description for t in own))
    return [f for f in pool if f["name"] not in own_names and not _alike(_Topic.of(f), about, own)]


def _asks_one_question(example: BfclExample) -> bool:
    return len(example.messages) == 1 and example.messages[0].get("role") == "user"


def _joined(first: str, later: str, joiner: str) -> str:
    """`later` appended to `first` as a second request of the same user turn."""
    first = first.rstrip()
    if first[-1:] not in ".?!":
        first += "."
    words = later.split(maxsplit=1)
    lower = joiner.strip() and words and words[0][:1].isupper() and words[0][1:].islower() and words[0] != "I"
    return f"{first}{joiner}{later[0].lower() + later[1:] if lower else later}"


def _composed(parts: Sequence[BfclExample], rng: random.Random) -> BfclExample:
    """One request asking every part's question, answered by all their calls in order."""
    text = str(parts[0].messages[0]["content"])
    for part in parts[1:]:
        text = _joined(text, str(part.messages[0]["content"]), rng.choice(_JOINERS))
    return BfclExample(
        id=COMPOSED_PREFIX + "+".join(p.id for p in parts),
        category=parts[0].category,
        messages=[{"role": "user", "content": text}],
        functions=[f for p in parts for f in p.functions],
        ground_truth=[entry for p in parts for entry in p.ground_truth or []],
    )


@dataclass(frozen=True, slots=True)
class ComposedRequest:
    """A request asking several sampled questions at once: the entry ids it was made of,
    and the distractors unrelated to every one of them."""

    example: BfclExample
    parts: tuple[str, ...]
    distractors: list[Function]


def composed_examples(pool: Sequence[BfclExample], unrelated: dict[str, list[Function]],
                      seed: int) -> list[ComposedRequest]:
    """`COMPOSED_SHARE` of `pool` as requests of 2-3 of its one-question entries whose
    functions are unrelated to each other's (no part's call could answer another part),
    each with the distractors unrelated to all of its parts. An entry joins at most one."""
    rng = random.Random(f"{seed}:compose")
    unrelated_names = {e.id: {str(f["name"]) for f in unrelated[e.id]} for e in pool}
    free = [e for e in pool if _asks_one_question(e) and e.ground_truth]
    rng.shuffle(free)
    out = []
    while free and len(out) < round(COMPOSED_SHARE * len(pool)):
        parts = [free.pop()]
        size = rng.choice(COMPOSED_SIZES)
        for candidate in list(free):
            if len(parts) == size:
                break
            if all(set(function_names(candidate.functions)) <= unrelated_names[p.id]
                   and set(function_names(p.functions)) <= unrelated_names[candidate.id] for p in parts):
                parts.append(candidate)
                free.remove(candidate)
        if len(parts) < 2:
            continue
        shared = set.intersection(*(unrelated_names[p.id] for p in parts))
        out.append(ComposedRequest(_composed(parts, rng), tuple(p.id for p in parts),
                                   [f for f in unrelated[parts[0].id] if f["name"] in shared]))
    return out


@dataclass(frozen=True, slots=True)
class _Draft:
    """A listing before masking. `budget` is the long toolbox's token budget (None for a
    few functions); an irrelevance copy made in its shape gets the same size. `parts` are
    a composed request's entry ids."""

    id: str
    example: BfclExample
    functions: list[Function]
    calls: list[Call]
    budget: int | None
    parts: tuple[str, ...] = ()


def _fill(functions: list[Function], candidates: Sequence[Function], budget: int) -> list[Function]:
    """`functions`, then candidates in order while the listing stays within `budget` tokens."""
    return [*functions, *fitting(functions, candidates, budget, approx_tokens)]


def _answered(example: BfclExample, unrelated: Sequence[Function], seed: int,
              parts: tuple[str, ...] = ()) -> _Draft:
    """The question among its own functions and unrelated ones, shuffled."""
    rng = random.Random(f"{seed}:{example.id}")
    functions = list(example.functions)
    budget = None
    if rng.random() < LONG_SHARE:
        budget = rng.randint(*LONG_TOOLBOX_TOKENS)
        listed = _fill(functions, rng.sample(list(unrelated), len(unrelated)), budget)
    else:
        listed = functions + rng.sample(list(unrelated), min(len(unrelated), rng.randint(0, MAX_FEW_DISTRACTORS)))
    rng.shuffle(listed)
    return _Draft(example.id, example, listed, example.reference_calls(), budget, parts)


def _refused(example: BfclExample, unrelated: Sequence[Function], shape: _Draft, seed: int) -> _Draft:
    """The question among unrelated functions only, as many (or as many tokens) as `shape`,
    an answered listing: a copy is sized like the answered listings, not like its entry."""
    rng = random.Random(f"{seed}:{example.id}:none")
    if shape.budget is not None:
        listed = _fill([], rng.sample(list(unrelated), len(unrelated)), shape.budget)
    else:
        listed = rng.sample(list(unrelated), min(len(unrelated), len(shape.functions)))
    return _Draft(f"{example.id}:none", example, listed, [], shape.budget)


def _spread(count: int, share: float, rng: random.Random) -> list[int]:
    """`share` of the indices `0..count-1`, evenly spaced from a random start: taken from a
    list sorted by size, every run of similar sizes gets its share (within one)."""
    step = 1 / share
    index = rng.random() * step
    picked = []
    while int(index) < count:
        picked.append(int(index))
        index += step
    return picked


def _by_size(drafts: Iterable[_Draft]) -> tuple[list[_Draft], list[_Draft]]:
    """Few-function listings sorted by functions and tokens, long toolboxes by budget."""
    drafts = list(drafts)
    few = sorted((d for d in drafts if d.budget is None),
                 key=lambda d: (len(d.functions), listing_tokens(d.functions, approx_tokens)))
    return few, sorted((d for d in drafts if d.budget is not None), key=lambda d: d.budget or 0)


def _identifiers(rng: random.Random, prefix: str, count: int) -> list[str]:
    names: dict[str, None] = {}
    while len(names) < count:
        names[prefix + "".join(rng.choice(string.ascii_lowercase) for _ in range(7))] = None
    return list(names)


def _masked(functions: list[Function], calls: list[Call], rng: random.Random) -> tuple[list[Function], list[Call]]:
    """Every function and parameter name of the listing replaced by a random identifier,
    in the listing and in the calls alike (no name stands out as the answer's);
    descriptions, types and values stay."""
    renamed: dict[str, tuple[str, dict[str, str]]] = {}
    masked = []
    for function, name in zip(functions, _identifiers(rng, "fn_", len(functions)), strict=True):
        function = copy.deepcopy(function)
        properties = (function.get("parameters") or {}).get("properties") or {}
        params = dict(zip(properties, _identifiers(rng, "p_", len(properties)), strict=True))
        renamed[function["name"]] = (name, params)
        function["name"] = name
        if properties:
            function["parameters"]["properties"] = {params[p]: s for p, s in properties.items()}
            required = function["parameters"].get("required")
            if required:
                function["parameters"]["required"] = [params.get(p, p) for p in required]
        masked.append(function)
    masked_calls = []
    for call in calls:
        name, params = renamed[call["name"]]
        for unlisted in [k for k in call["arguments"] if k not in params]:  # BFCL has a few: masked too
            params[unlisted] = _identifiers(rng, "p_", 1)[0]
        masked_calls.append({"name": name, "arguments": {params[k]: v for k, v in call["arguments"].items()}})
    return masked, masked_calls


def listed_examples(pool: list[BfclExample], seed: int = DATA_SEED, *,
                    distractors: Sequence[Function] | None = None) -> list[Listed]:
    """The recipe applied to `pool`: each question once with its calls, and a share of them
    again among functions none of which answers them. Distractors come from `distractors`
    (default: every function of the trained categories' train split)."""
    candidates = distractor_pool() if distractors is None else distractors
    unrelated = {e.id: unrelated_functions(e, candidates) for e in pool}
    answered = [_answered(e, unrelated[e.id], seed) for e in pool]
    answered += [_answered(c.example, c.distractors, seed, c.parts) for c in composed_examples(pool, unrelated, seed)]
    rng = random.Random(f"{seed}:mix")
    few, long = _by_size(answered)
    shapes = [few[i] for i in _spread(len(few), IRRELEVANT_SHARE, rng)]
    shapes += [long[i] for i in _spread(len(long), LONG_IRRELEVANT_SHARE, rng)]
    rng.shuffle(shapes)
    questions = rng.sample(pool, len(shapes))
    refused = {q.id: _refused(q, unrelated[q.id], shape, seed) for q, shape in zip(questions, shapes, strict=True)}
    masked: set[str] = set()
    for group in (*_by_size(answered), *_by_size(refused.values())):
        masked |= {group[i].id for i in _spread(len(group), MASKED_SHARE, rng)}
    out = []
    for draft in (d for a in answered for d in (a, refused.get(a.id)) if d is not None):
        functions, calls = draft.functions, draft.calls
        if draft.id in masked:
            functions, calls = _masked(functions, calls, random.Random(f"{seed}:{draft.id}:mask"))
        out.append(Listed(draft.id, draft.example.messages, functions, calls, masked=draft.id in masked,
                          long_toolbox=draft.budget is not None, parts=draft.parts))
    return out


def _role_targets(role: ToolRole, items: Iterable[Listed]) -> Iterator[tuple[Listed, str | None]]:
    """Each example a role trains on: per listing once, for `arguments` once per function
    called (and not at all where none is)."""
    for item in items:
        if role is ToolRole.ARGUMENTS:
            yield from ((item, name) for name in dict.fromkeys(c["name"] for c in item.calls))
        else:
            yield item, None


def role_chats(role: ToolRole, pool: list[BfclExample], seed: int = DATA_SEED) -> list[dict]:
    """`{"id", "messages"}` records for one role, in a fixed order."""
    chats: list[dict] = []
    for item, name in _role_targets(role, listed_examples(pool, seed)):
        if name is not None:
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
    chats = role_chats(role, role_pool(role))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for chat in chats:
            handle.write(json.dumps(chat) + "\n")
    return len(chats)


@dataclass(frozen=True, slots=True)
class MixRow:
    """One bucket of a role's examples and how many of them answer `none`, are masked or
    are long toolboxes: the shares the recipe keeps from depending on listing size."""

    bucket: str
    examples: int
    none: int
    masked: int
    long_toolbox: int


def _bucket_label(bounds: tuple[int, int | None], unit: str) -> str:
    low, high = bounds
    if high is None:
        return f"{low:,}+ {unit}"
    return f"{low:,} {unit.removesuffix('s')}" if low == high else f"{low:,}-{high:,} {unit}"


def _in_bucket(value: int, bounds: tuple[int, int | None]) -> bool:
    low, high = bounds
    return value >= low and (high is None or value <= high)


def role_mix(role: ToolRole, pool: list[BfclExample] | None = None, seed: int = DATA_SEED) -> list[MixRow]:
    """A role's training examples counted per listing size (functions listed, listing
    tokens) and per kind of listing: the check that `none` and masking do not follow size."""
    items = listed_examples(role_pool(role, seed) if pool is None else pool, seed)
    targets = [item for item, _ in _role_targets(role, items)]
    sizes = [(len(i.functions), listing_tokens(i.functions, approx_tokens)) for i in targets]
    buckets: list[tuple[str, list[Listed]]] = [("all", targets)]
    buckets += [("few functions", [i for i in targets if not i.long_toolbox]),
                ("long toolbox", [i for i in targets if i.long_toolbox])]
    buckets += [(_bucket_label(b, "functions"), [i for i, (n, _) in zip(targets, sizes) if _in_bucket(n, b)])
                for b in FUNCTION_BUCKETS]
    buckets += [(_bucket_label(b, "tokens"), [i for i, (_, t) in zip(targets, sizes) if _in_bucket(t, b)])
                for b in TOKEN_BUCKETS]
    return [MixRow(label, len(items), sum(not i.calls for i in items), sum(i.masked for i in items),
                   sum(i.long_toolbox for i in items)) for label, items in buckets]
