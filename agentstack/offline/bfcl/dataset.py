"""BFCL single-turn entries as agentstack sees them, and the committed train/dev split.

Entries come from the `bfcl-eval` package itself (question files and possible answers),
loaded the way its own generation step loads them. Only `TRAIN_CATEGORIES` may feed
training, prompt tuning or model selection; the dev ids listed in `data/bfcl_split.json`
are held out of training, and every other category is evaluation-only.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentstack.config import PACKAGE_DATA
from agentstack.chat.tool_prompts import Call

TRAIN_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple")
SPLIT_FILE = PACKAGE_DATA / "bfcl_split.json"
# Dev ids per category, drawn in rounds (each with the next seed, from the ids left): the
# first 25 held out since the first adapters, the second 25 since the recipe-3 adapters,
# so every trained category is scored on 50 ids.
DEV_ROUNDS = (25, 25)
SPLIT_SEED = 20261123


class UnknownCategory(ValueError):
    """Not one of BFCL's single-turn categories."""


class SplitFile(BaseModel):
    """Dev ids per trained category; everything else in those categories is train."""

    seed: int
    dev: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class BfclExample:
    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] | None

    def reference_calls(self) -> list[Call]:
        """One acceptable answer: per parameter the first allowed value; omittable ones left
        out. Nested objects list allowed values per field too, so they are picked the same way."""
        required = {f["name"]: set((f.get("parameters") or {}).get("required") or []) for f in self.functions}
        return [{"name": name, "arguments": _first_allowed(params, required.get(name, set()))}
                for entry in self.ground_truth or [] for name, params in entry.items()]

    @classmethod
    def made_up(cls, id: str, category: str, question: str, function: dict[str, Any],
                calls: list[dict[str, Any]]) -> BfclExample:
        """A one-question request made up for training: `function` listed alone, called once
        per entry of `calls` (its arguments), each value the only one allowed."""
        return cls(id=id, category=category, messages=[{"role": "user", "content": question}],
                   functions=[function],
                   ground_truth=[{function["name"]: {k: [v] for k, v in call.items()}} for call in calls])


def bfcl_function(name: str, description: str, params: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """A function in BFCL's shape; `params` maps each parameter, all required, to its
    (type, description)."""
    return {"name": name, "description": description,
            "parameters": {"type": "dict",
                           "properties": {p: {"type": t, "description": d} for p, (t, d) in params.items()},
                           "required": list(params)}}


def _first_allowed(params: dict[str, Any], required: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """Each parameter's first allowed value; `""` allows leaving it out, unless it is required."""
    picked = {}
    for param, allowed in params.items():
        values = [v for v in allowed if v != ""] if param in required else allowed[:1]
        if values and values[0] != "":
            picked[param] = _picked(values[0])
    return picked


def _picked(value: Any) -> Any:
    if isinstance(value, dict):
        return _first_allowed(value)
    if isinstance(value, list):
        return [_picked(v) for v in value]
    return value


def single_turn_categories() -> list[str]:
    from bfcl_eval.constants.category_mapping import SINGLE_TURN_CATEGORY

    return list(SINGLE_TURN_CATEGORY)


@cache
def load_category(category: str) -> tuple[BfclExample, ...]:
    """All entries of one single-turn category, with ground truth where BFCL has one."""
    if category not in single_turn_categories():
        raise UnknownCategory(
            f"unknown BFCL single-turn category {category!r}; "
            f"choose from: {', '.join(single_turn_categories())}"
        )
    from bfcl_eval.utils import is_relevance_or_irrelevance, load_dataset_entry, load_ground_truth_entry

    # The function docs as written, without BFCL's per-language hint sentence: on this
    # CPU every prompt token costs training time, and the checker reads them as written.
    entries = load_dataset_entry(category, include_prereq=False, include_language_specific_hint=False)
    answers: dict[str, list[dict[str, Any]]] = {}
    if not is_relevance_or_irrelevance(category):
        answers = {a["id"]: a["ground_truth"] for a in load_ground_truth_entry(category)}
    return tuple(
        BfclExample(
            id=e["id"],
            category=category,
            messages=list(e["question"][0]),
            functions=list(e["function"]),
            ground_truth=answers.get(e["id"]),
        )
        for e in entries
    )


def make_split(seed: int = SPLIT_SEED, rounds: int = len(DEV_ROUNDS)) -> SplitFile:
    """The split as drawn, through its first `rounds` rounds; the committed file (all of
    them) is what counts."""
    dev: dict[str, list[str]] = {category: [] for category in TRAIN_CATEGORIES}
    for round_, count in enumerate(DEV_ROUNDS[:rounds]):
        rng = random.Random(seed + round_)
        for category in TRAIN_CATEGORIES:
            rest = [e.id for e in load_category(category) if e.id not in dev[category]]
            dev[category] += rng.sample(rest, count)
    return SplitFile(seed=seed, dev={c: sorted(ids, key=_id_order) for c, ids in dev.items()})


def _id_order(example_id: str) -> tuple[str, int]:
    prefix, _, number = example_id.rpartition("_")
    return prefix, int(number) if number.isdigit() else -1


@cache
def load_split(path: Path = SPLIT_FILE) -> SplitFile:
    return SplitFile.model_validate(json.loads(path.read_text()))


@cache
def _dev_ids(rounds: int | None) -> dict[str, frozenset[str]]:
    split = load_split() if rounds is None else make_split(rounds=rounds)
    return {category: frozenset(ids) for category, ids in split.dev.items()}


def examples(category: str, part: str = "all", dev_rounds: int | None = None) -> list[BfclExample]:
    """`part` is `train`, `dev` or `all`; categories never trained on have only `all` (= dev).

    `dev_rounds` reads the split as it was after that many rounds (None: as committed), for
    consumers whose measured data was drawn from an earlier split."""
    entries = list(load_category(category))
    if part == "all" or category not in TRAIN_CATEGORIES:
        return entries
    dev = _dev_ids(dev_rounds)[category]
    if part == "dev":
        return [e for e in entries if e.id in dev]
    if part == "train":
        return [e for e in entries if e.id not in dev]
    raise ValueError(f"part must be train, dev or all, not {part!r}")
