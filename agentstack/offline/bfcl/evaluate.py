"""`agentstack eval bfcl`: BFCL single-turn categories through the serving engine, scored
by bfcl-eval's AST checker, for three ways of serving the same backbone:

- `base`:   the base model, fairly: the roles' own listing, an instruction saying what
            to write, and guided decoding to a JSON list of calls of the listed functions
            (empty when none applies), so every reply is a well-formed answer;
- `single`: one adapter trained to write every call at once;
- `roles`:  the selector adapter, then the arguments adapter once per chosen function.

`single` and `roles` run as `model: tool-calling` serves them, held to their answer
formats by grammars (`agentstack.chat.call_grammar`); `guided=False` measures them without.

Listings can be reordered (`shuffle_seed`), asked once per rotation (`rotate`: every
question with its right function at every position) or padded with distractors up to a
token size (`toolbox_tokens`), all seeded per example (`listings`), so a position bias and
long toolboxes show in the scores; accuracy is also kept per position of the right function.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentstack.offline.bench.report import grouped_bar_chart, markdown_table
from agentstack.offline.bfcl.checker import check
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples
from agentstack.offline.bfcl.listings import (
    among_distractors,
    answer_position,
    distractor_pool,
    rotations,
    shuffled,
)
from agentstack.chat.call_grammar import calls_list_schema
from agentstack.service import PromptTooLong, Service
from agentstack.chat.tool_roles import CALLS_MAX_TOKENS, ToolCallOutcome, select_and_fill, single_pass
from agentstack.chat.tool_shortlist import SHORTLIST_SIZE
from agentstack.chat.tool_prompts import Call, single_messages


class EvalMode(str, enum.Enum):
    BASE = "base"
    SINGLE = "single"
    ROLES = "roles"


class MissKind(str, enum.Enum):
    """Where a wrong answer went wrong, by the functions it named against the entry's own."""

    CALLS = "right functions, wrong calls"
    SOME = "some of the functions"
    OTHER = "other functions"
    NONE = "no function"


def miss_kind(example: BfclExample, named: Sequence[str]) -> MissKind | None:
    """`named`: the selector's choice in `roles`, the called functions otherwise. None for
    an entry that calls nothing (relevance categories have no functions to get right)."""
    wanted = {call["name"] for call in example.reference_calls()}
    chosen = set(named)
    if not wanted:
        return None
    if not chosen:
        return MissKind.NONE
    if chosen == wanted:
        return MissKind.CALLS
    return MissKind.SOME if chosen < wanted else MissKind.OTHER


@dataclass(frozen=True, slots=True)
class EvalConfig:
    categories: tuple[str, ...]
    modes: tuple[EvalMode, ...] = (EvalMode.BASE, EvalMode.SINGLE, EvalMode.ROLES)
    limit: int | None = None
    concurrency: int = 8
    shuffle_seed: int | None = None
    rotate: bool = False
    toolbox_tokens: int | None = None
    guided: bool = True
    shortlist: int | None = SHORTLIST_SIZE

    @property
    def listing(self) -> str:
        parts = ([f"shuffled (seed {self.shuffle_seed})"] if self.shuffle_seed is not None else []) + (
            ["every rotation"] if self.rotate else []) + (
            [f"toolbox {self.toolbox_tokens} tokens"] if self.toolbox_tokens else []) + (
            [] if self.guided else ["roles unguided"]) + (
            ["caller's order, whole listing"] if self.shortlist is None else
            [f"shortlist {self.shortlist}"] if self.shortlist != SHORTLIST_SIZE else [])
        return ", ".join(parts) or "as given"


@dataclass(slots=True)
class CategoryScore:
    category: str
    mode: EvalMode
    part: str
    n: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    wall_s: float = 0.0
    listing: str = "as given"
    by_position: dict[int, list[int]] = field(default_factory=dict)
    misses: dict[MissKind, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def position_accuracy(self, min_n: int = 5) -> dict[int, float]:
        """Accuracy by 0-based position of the right function, where it was there `min_n`+ times."""
        return {p: c / n for p, (n, c) in sorted(self.by_position.items()) if n >= min_n}

    @property
    def position_spread(self) -> float | None:
        """Best minus worst position's accuracy: 0 for a selector that reads, not counts."""
        accuracy = self.position_accuracy()
        return max(accuracy.values()) - min(accuracy.values()) if len(accuracy) > 1 else None

    def summary(self) -> dict[str, Any]:
        spread = self.position_spread
        return {"category": self.category, "mode": self.mode.value, "listing": self.listing, "n": self.n,
                "correct": self.correct, "accuracy": round(self.accuracy, 4),
                "by_position": {str(p): [n, c] for p, (n, c) in sorted(self.by_position.items())},
                "position_spread": round(spread, 4) if spread is not None else None,
                "misses": {kind.value: count for kind, count in self.misses.items()}}


def eval_examples(category: str, limit: int | None) -> tuple[str, list[BfclExample]]:
    """The dev split of a trained category, every entry of any other; first `limit` by id."""
    part = "dev" if category in TRAIN_CATEGORIES else "all"
    chosen = examples(category, part)
    return part, chosen[:limit] if limit else chosen


def listed(chosen: list[BfclExample], config: EvalConfig, count_tokens: Callable[[str], int]) -> list[BfclExample]:
    """The examples with their functions listed as `config` asks."""
    if config.toolbox_tokens:
        pool = distractor_pool()
        chosen = [among_distractors(e, pool, config.toolbox_tokens, count_tokens, config.shuffle_seed or 0)
                  for e in chosen]
    if config.shuffle_seed is not None:
        chosen = [shuffled(e, config.shuffle_seed) for e in chosen]
    if config.rotate:
        chosen = [turned for e in chosen for turned in rotations(e)]
    return chosen


BASE_INSTRUCTION = (
    'Reply with a JSON list of the calls that answer the request, each {"name": ..., "arguments": {...}} '
    "with the function's parameters; reply [] if no listed function applies."
)
async def _base_outcome(service: Service, example: BfclExample) -> ToolCallOutcome:
    """The base model with the roles' listing, told the answer's shape and held to it."""
    prompt = [*single_messages(example.messages, example.functions), {"role": "user", "content": BASE_INSTRUCTION}]
    completion = await service.complete(service.base_name, prompt, CALLS_MAX_TOKENS,
                                        json_schema=calls_list_schema(example.functions))
    try:
        listed = json.loads(completion.text)
    except ValueError:
        listed = []
    calls: list[Call] = [{"name": c["name"], "arguments": c.get("arguments") or {}}
                         for c in listed if isinstance(c, dict) and isinstance(c.get("name"), str)] \
        if isinstance(listed, list) else []
    outcome = ToolCallOutcome(calls=calls)
    outcome.add(service.base_name, completion)
    return outcome


async def run_mode(service: Service, mode: EvalMode, example: BfclExample, *, guided: bool = True,
                   shortlist: int | None = SHORTLIST_SIZE) -> ToolCallOutcome:
    """One example in one mode; `guided` holds the roles to their answer formats and
    `shortlist` cuts a long listing, as `model: tool-calling` serves them (the base is
    always held to its JSON list and reads the whole listing: the raw model's reference)."""
    if mode is EvalMode.BASE:
        return await _base_outcome(service, example)
    if mode is EvalMode.SINGLE:
        return await single_pass(service, example.messages, example.functions, guided=guided, shortlist=shortlist)
    return await select_and_fill(service, example.messages, example.functions, guided=guided, shortlist=shortlist)


async def score_category(
    service: Service, category: str, mode: EvalMode, config: EvalConfig, progress: Progress | None
) -> CategoryScore:
    part, chosen = eval_examples(category, config.limit)
    assert service.engine is not None
    tokenizer = service.engine.tokenizer
    chosen = listed(chosen, config, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
    score = CategoryScore(category=category, mode=mode, part=part, listing=config.listing)
    gate = asyncio.Semaphore(config.concurrency)
    task = progress.add_task(f"{mode.value:>6} {category}", total=len(chosen)) if progress else None

    async def one(example: BfclExample) -> None:
        async with gate:
            try:
                outcome = await run_mode(service, mode, example, guided=config.guided,
                                         shortlist=config.shortlist)
            except PromptTooLong as e:
                outcome, error = ToolCallOutcome(calls=[]), f"prompt too long: {e}"
            else:
                error = ""
        verdict = check(example, outcome.calls)
        score.n += 1
        score.correct += verdict.correct
        if (position := answer_position(example)) is not None:
            tally = score.by_position.setdefault(position, [0, 0])
            tally[0] += 1
            tally[1] += verdict.correct
        score.prompt_tokens += outcome.prompt_tokens
        score.generated_tokens += outcome.generated_tokens
        if not verdict.correct:
            kind = miss_kind(example, outcome.selected or [c["name"] for c in outcome.calls])
            if kind is not None:
                score.misses[kind] = score.misses.get(kind, 0) + 1
            score.failures.append({"id": example.id, "error": error or verdict.error,
                                   "kind": kind.value if kind else None,
                                   "calls": outcome.calls, "steps": outcome.steps})
        if progress is not None and task is not None:
            progress.advance(task)

    started = time.perf_counter()
    await asyncio.gather(*(one(e) for e in chosen))
    score.wall_s = time.perf_counter() - started
    return score


async def evaluate(service: Service, config: EvalConfig, *, quiet: bool = False,
                   on_score: Callable[[list[CategoryScore]], Any] | None = None) -> list[CategoryScore]:
    """Every (category, mode) pair, modes interleaved per category so drift hits all alike;
    `on_score` sees the scores so far after each pair (a long run reports as it goes)."""
    scores: list[CategoryScore] = []
    with Progress(TextColumn("[bold]eval bfcl[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=quiet) as progress:
        for category in config.categories:
            for mode in config.modes:
                scores.append(await score_category(service, category, mode, config, progress))
                if on_score is not None:
                    on_score(scores)
    return scores


def write_report(scores: Sequence[CategoryScore], report_dir: Path) -> tuple[Path, Path]:
    """Markdown table (accuracy with counts, tokens, throughput), a grouped bar chart, and
    every miss with the checker's reason and the roles' raw replies, to look into."""
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / "eval-bfcl-misses.jsonl").open("w", encoding="utf-8") as misses:
        for s in scores:
            for failure in s.failures:
                misses.write(json.dumps({"category": s.category, "mode": s.mode.value, **failure}) + "\n")
    plot = grouped_bar_chart(
        report_dir / "eval-bfcl.png",
        "BFCL AST accuracy by serving mode",
        {
            category: {s.mode.value: s.accuracy for s in scores if s.category == category}
            for category in dict.fromkeys(s.category for s in scores)
        },
        ylabel="accuracy",
    )
    rows = [
        [s.category + (" (trained, dev split)" if s.part == "dev" else " (never trained)"),
         s.mode.value, s.listing, f"{s.correct}/{s.n}", f"{s.accuracy:.1%}",
         " ".join(f"{p + 1}:{a:.0%}" for p, a in s.position_accuracy().items()) or "-",
         f"{s.position_spread:.0%}" if s.position_spread is not None else "-",
         s.prompt_tokens, s.generated_tokens, f"{s.wall_s:.1f}"]
        for s in scores
    ]
    miss_rows = [[s.category, s.mode.value, s.listing, s.n - s.correct, *(s.misses.get(k, 0) for k in MissKind)]
                 for s in scores if s.misses]
    text = (
        "# BFCL evaluation\n\n"
        "Scored by bfcl-eval's AST checker; each row ran through the serving engine. By position:\n"
        "accuracy by the place of the right function in the listing the caller sent (1 = first; 5+ examples).\n"
        "The roles read it ranked by relevance unless the shortlist is off, so within one run this tells which\n"
        "questions sit where; `--rotate` asks the same questions at every place.\n\n"
        + markdown_table(["category", "mode", "listing", "correct", "accuracy", "by position", "spread",
                          "prompt tokens", "generated tokens", "wall s"], rows)
        + f"\n\n![accuracy]({plot.name})\n"
        + ("\n## Where the misses went wrong\n\nBy the functions a wrong answer named (in `roles`, the "
           "selector's choice) against the entry's own; `eval-bfcl-misses.jsonl` has each one.\n\n"
           + markdown_table(["category", "mode", "listing", "misses", *(k.value for k in MissKind)], miss_rows)
           + "\n" if miss_rows else "")
    )
    report = report_dir / "eval-bfcl.md"
    report.write_text(text, encoding="utf-8")
    return report, plot
