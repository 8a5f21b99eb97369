"""The gate's task family: requests where reasoning helps some inputs and not others.

Three kinds of traffic, each scored by code, never by a model (strictly, from the answer
field only: `routers.offline.scoring`):

- `arith-easy` / `arith-hard`: generated word problems of 1 step or 3-4 steps, with a
  worked solution and an exact integer answer (a 135M model answers one step at once, but
  needs the written steps for several);
- `tool`: BFCL prompts (`simple_python`, `multiple`; train split for training, dev split
  for evaluation), scored by bfcl-eval's AST checker;
- `chat`: plain questions with one short known answer (capitals, opposites).

Everything is drawn from a seeded `random.Random`, so a seed names one exact task list.
The held-out evaluation set, with its out-of-template kinds, is `routers.offline.heldout`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentstack.chat.tool_prompts import parse_calls
from routers.offline.scoring import final_answer_text, number_answer, text_answer_matches
from routers.prompt import route_messages

TaskKind = Literal["arith-easy", "arith-hard", "tool", "chat", "ood-arith", "units", "multi-turn", "facts"]
Part = Literal["train", "test"]
# How a reply is checked: the integer of its answer field, its opening words, or its calls.
Scoring = Literal["number", "text", "calls"]
# The kinds the gate is trained on; the held-out set adds out-of-template ones.
TASK_KINDS: tuple[TaskKind, ...] = ("arith-easy", "arith-hard", "tool", "chat")
# A generated arithmetic problem as its template and the numbers it was built from: two
# prompts with the same signature are the same problem, whatever the names and items.
Signature = tuple[str, tuple[int, ...]]

NAMES = ("Tom", "Ana", "Sam", "Lea", "Omar", "Mia", "Ben", "Zoe", "Raj", "Ivy", "Leo", "Nora")
ITEMS = ("apples", "pens", "stickers", "coins", "books", "shells", "cards", "marbles", "eggs", "stamps")
CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
    ("Spain", "Madrid"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("China", "Beijing"),
    ("England", "London"), ("Greece", "Athens"), ("Canada", "Ottawa"), ("Ireland", "Dublin"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"),
    ("Thailand", "Bangkok"), ("Hungary", "Budapest"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
)
OPPOSITES = (
    ("hot", "cold"), ("up", "down"), ("big", "small"), ("day", "night"), ("fast", "slow"),
    ("open", "closed"), ("happy", "sad"), ("light", "dark"), ("old", "new"), ("wet", "dry"),
    ("left", "right"), ("full", "empty"), ("early", "late"), ("hard", "soft"), ("win", "lose"),
    ("high", "low"), ("long", "short"), ("rich", "poor"), ("first", "last"), ("in", "out"),
)
TOOL_CATEGORIES = ("simple_python", "multiple")
# The gate's BFCL prompts come from the split as it was when its outcomes were measured
# (one dev round); later rounds, held out for the tool roles, leave them where they were.
GATE_DEV_ROUNDS = 1

# Disjoint seeds: the reasoner's training problems, the gate's training prompts and the
# held-out evaluation prompts never come from the same stream.
SEEDS: dict[str, int] = {"reasoner": 11, "train": 23, "test": 37, "heldout": 53}
# Per kind, how many prompts each part holds; tool prompts are capped by BFCL's split.
SIZES: dict[Part, dict[TaskKind, int]] = {
    "train": {"arith-easy": 40, "arith-hard": 50, "tool": 40, "chat": 22},
    "test": {"arith-easy": 20, "arith-hard": 25, "tool": 20, "chat": 15},
}


@dataclass(frozen=True, slots=True)
class Problem:
    """A word problem, its worked steps and its exact answer."""

    text: str
    steps: tuple[str, ...]
    answer: int
    signature: Signature


@dataclass(frozen=True, slots=True)
class Task:
    """One request of the family and what counts as a correct reply to it."""

    id: str
    kind: TaskKind
    messages: list[dict[str, str]]
    answer: str
    scoring: Scoring = "number"
    tools: list[dict[str, Any]] | None = None
    worked: tuple[str, ...] = field(default=())
    signature: Signature | None = None

    @property
    def prompt(self) -> str:
        """The request's last message: what a prompt is compared by across task sets."""
        return self.messages[-1]["content"]

    def score(self, text: str) -> bool:
        """Is `text` (the model's whole reply, reasoning included) a correct answer?"""
        if self.scoring == "calls":
            from agentstack.offline.bfcl.checker import check

            calls = parse_calls(final_answer_text(text), self.tools or [])
            return check(_bfcl_example(self.id), calls).correct
        if self.scoring == "text":
            return text_answer_matches(text, self.answer)
        return number_answer(text) == int(self.answer)


# Arithmetic


def make_problem(rng: random.Random, steps: int) -> Problem:
    """A word problem of `steps` operations on one stock of items, answer kept in 0..199."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(3, 20)
    sentences = [f"{name} has {value} {item}."]
    worked = [f"Start with {value}."]
    ops: list[str] = []
    numbers: list[int] = [value]
    for i in range(steps):
        op = rng.choice(("add", "sub", "mul")) if i > 0 else rng.choice(("add", "sub"))
        if op == "mul" and value * 3 > 199:
            op = "sub"
        if op == "sub" and value < 2:
            op = "add"
        if op == "add":
            n = rng.randint(2, 19)
            sentences.append(rng.choice((f"Then {name} gets {n} more.", f"A friend gives {name} {n} more.")))
            worked.append(f"{value} + {n} = {value + n}.")
            ops.append("+")
            numbers.append(n)
            value += n
        elif op == "sub":
            n = rng.randint(1, min(value - 1, 15))
            sentences.append(rng.choice((f"Then {name} gives away {n}.", f"{name} loses {n} of them.")))
            worked.append(f"{value} - {n} = {value - n}.")
            ops.append("-")
            numbers.append(n)
            value -= n
        else:
            k = rng.choice((2, 3)) if value * 3 <= 199 else 2
            word = {2: "doubles", 3: "triples"}[k]
            sentences.append(f"Then {name} {word} the number of {item}.")
            worked.append(f"{value} * {k} = {value * k}.")
            ops.append("*")
            numbers.append(k)
            value *= k
    question = f"How many {item} does {name} have now?"
    return Problem(text=" ".join([*sentences, question]), steps=tuple(worked), answer=value,
                   signature=(f"word-problem:{''.join(ops)}", tuple(numbers)))


def arith_tasks(rng: random.Random, kind: TaskKind, count: int, prefix: str,
                exclude: frozenset[str] = frozenset(),
                exclude_signatures: frozenset[Signature] = frozenset()) -> list[Task]:
    """`count` distinct word problems of `kind`, none of whose text or signature is excluded."""
    tasks: list[Task] = []
    seen = set(exclude)
    seen_signatures = set(exclude_signatures)
    while len(tasks) < count:
        i = len(tasks)
        steps = 1 if kind == "arith-easy" else rng.choice((3, 4))
        problem = make_problem(rng, steps)
        if problem.text in seen or problem.signature in seen_signatures:
            continue
        seen.add(problem.text)
        if exclude_signatures:
            seen_signatures.add(problem.signature)
        tasks.append(Task(id=f"{prefix}:{kind}:{i}", kind=kind,
                          messages=[{"role": "user", "content": problem.text}],
                          answer=str(problem.answer), worked=problem.steps, signature=problem.signature))
    return tasks


def worked_reply(problem: Problem, *, think: bool) -> str:
    """The reasoner's target: short steps in a think block, then the answer line."""
    answer = f"Answer: {problem.answer}"
    return f"<think>{' '.join(problem.steps)}</think>\n{answer}" if think else answer


# Chat and tools


def chat_tasks(rng: random.Random, count: int, part: Part, prefix: str) -> list[Task]:
    """Capitals and opposites; train and test draw from disjoint halves of each list."""
    def half(pool: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        cut = len(pool) // 2
        return list(pool[:cut] if part == "train" else pool[cut:])

    capitals, opposites = half(CAPITALS), half(OPPOSITES)
    questions = [(f"What is the capital of {country}?", city) for country, city in capitals]
    questions += [(f"What is the opposite of the word '{word}'? Reply with one word.", other)
                  for word, other in opposites]
    rng.shuffle(questions)
    return [Task(id=f"{prefix}:chat:{i}", kind="chat", messages=[{"role": "user", "content": q}], answer=a,
                 scoring="text")
            for i, (q, a) in enumerate(questions[:count])]


def _bfcl_example(task_id: str) -> Any:
    from agentstack.offline.bfcl.dataset import load_category

    bfcl_id = task_id.split(":", 2)[2]
    category = bfcl_id.rsplit("_", 1)[0]
    for example in load_category(category):
        if example.id == bfcl_id:
            return example
    raise KeyError(bfcl_id)


def tool_tasks(rng: random.Random, count: int, part: Part, prefix: str,
               exclude: frozenset[str] = frozenset()) -> list[Task]:
    """BFCL prompts of the train split (`train`) or the dev split (any other part)."""
    from agentstack.offline.bfcl.dataset import examples

    pool = [e for c in TOOL_CATEGORIES
            for e in examples(c, "train" if part == "train" else "dev", dev_rounds=GATE_DEV_ROUNDS)
            if str(e.messages[-1]["content"]) not in exclude]
    chosen = rng.sample(pool, min(count, len(pool)))
    return [Task(id=f"{prefix}:tool:{e.id}", kind="tool",
                 messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in e.messages],
                 answer=json.dumps(e.ground_truth), scoring="calls", tools=list(e.functions))
            for e in chosen]


def gate_tasks(part: Part) -> list[Task]:
    """The gate's training (`train`) or held-out (`test`) prompts, in a fixed order."""
    rng = random.Random(SEEDS[part])
    sizes = SIZES[part]
    # Held-out problems never repeat a training one (1-step problems can collide).
    # BFCL also repeats a question across categories with other functions.
    exclude = frozenset() if part == "train" else frozenset(
        t.messages[-1]["content"] for t in gate_tasks("train"))
    # NOTE: one stream for all kinds, so a change to one kind's pool (BFCL's split) moves
    # the others' prompts too; measured tables carry prompt digests to catch that.
    return (
        arith_tasks(rng, "arith-easy", sizes["arith-easy"], part, exclude)
        + arith_tasks(rng, "arith-hard", sizes["arith-hard"], part, exclude)
        + tool_tasks(rng, sizes["tool"], part, part, exclude)
        + chat_tasks(rng, sizes["chat"], part, part)
    )


def first_per_kind(tasks: list[Task], limit: int | None) -> list[Task]:
    """The first `limit` tasks of each kind, in their order (all of them for None)."""
    if limit is None:
        return tasks
    counts: dict[str, int] = {}
    chosen = []
    for task in tasks:
        counts[task.kind] = counts.get(task.kind, 0) + 1
        if counts[task.kind] <= limit:
            chosen.append(task)
    return chosen


def reasoner_problems(count: int = 480, seed: int = SEEDS["reasoner"]) -> list[tuple[int, Problem]]:
    """The reasoner's training problems with their draw numbers; a third are 1-step, and
    none is one of the gate's `train` or `test` prompts."""
    rng = random.Random(seed)
    held_out = {t.messages[0]["content"] for p in ("train", "test") for t in gate_tasks(p)
                if t.kind.startswith("arith")}
    problems: list[tuple[int, Problem]] = []
    i = 0
    while len(problems) < count:
        problem = make_problem(rng, 1 if i % 3 == 0 else rng.choice((2, 3, 4)))
        i += 1
        if problem.text not in held_out:
            problems.append((i, problem))
    return problems


def reasoner_chats(count: int = 480, seed: int = SEEDS["reasoner"]) -> list[dict[str, Any]]:
    """The reasoner's training chats: each problem once on the think path (steps, then the
    answer) and once on the direct path (the answer line only)."""
    chats: list[dict[str, Any]] = []
    for i, problem in reasoner_problems(count, seed):
        for think in (True, False):
            prompt = route_messages([{"role": "user", "content": problem.text}], None, think=think)
            reply = worked_reply(problem, think=think)
            chats.append({"id": f"reasoner:{i}:{'think' if think else 'direct'}",
                          "messages": [*prompt, {"role": "assistant", "content": reply}]})
    return chats


def write_reasoner_data(out: Path, count: int = 480) -> int:
    """Write the reasoner's JSONL training file; returns the number of chats."""
    chats = reasoner_chats(count)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    return len(chats)
