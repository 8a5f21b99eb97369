"""The held-out set `agentstack eval gate` measures: in-template and out-of-template prompts.

A gate can look good on prompts built exactly like its training prompts and still fail
on traffic phrased otherwise. The set therefore has two parts, both disjoint from
training by construction (their own seeds, templates, names, items and fact pools; BFCL's
dev split only) and by test (`tests/routers/offline/test_heldout.py`):

- in-template: `arith-easy`, `arith-hard`, `tool`, `chat`, drawn like the training
  kinds (`routers.offline.tasks`) but never repeating a training prompt, nor for
  arithmetic a training problem's template and numbers (the reasoner's problems included);
- out-of-template:
  - `ood-arith`: word problems from sentence frames of their own ("A shop had 40
    pencils and sold 12..."), with names and items the training generator never uses;
  - `units`: unit conversions with an exact integer answer;
  - `multi-turn`: a previous exchange, then a follow-up question with an exact answer;
  - `facts`: questions with one short known answer (capitals, antonyms, general facts)
    from pools that share no entry with the training ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from routers.offline.tasks import (
    SEEDS,
    TASK_KINDS,
    Scoring,
    Signature,
    Task,
    TaskKind,
    arith_tasks,
    chat_tasks,
    gate_tasks,
    reasoner_problems,
    tool_tasks,
)

TemplatePart = Literal["in-template", "out-of-template"]
IN_TEMPLATE_KINDS: tuple[TaskKind, ...] = TASK_KINDS
OUT_OF_TEMPLATE_KINDS: tuple[TaskKind, ...] = ("ood-arith", "units", "multi-turn", "facts")
HELDOUT_KINDS: tuple[TaskKind, ...] = (*IN_TEMPLATE_KINDS, *OUT_OF_TEMPLATE_KINDS)
HELDOUT_SIZES: dict[TaskKind, int] = {
    "arith-easy": 25, "arith-hard": 25, "tool": 30, "chat": 20,
    "ood-arith": 40, "units": 25, "multi-turn": 25, "facts": 30,
}
PREFIX = "heldout"

HELDOUT_NAMES = ("Priya", "Carlos", "Hana", "Felix", "Amara", "Jonas", "Yuki", "Dmitri", "Elena", "Kofi")
HELDOUT_ITEMS = ("pencils", "cookies", "tickets", "balloons", "bottles", "oranges", "buttons", "candles")
HELDOUT_CAPITALS = (
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Turkey", "Ankara"), ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Iran", "Tehran"), ("Colombia", "Bogota"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Romania", "Bucharest"),
    ("Iceland", "Reykjavik"), ("Morocco", "Rabat"), ("South Korea", "Seoul"), ("Saudi Arabia", "Riyadh"),
    ("Iraq", "Baghdad"), ("Venezuela", "Caracas"), ("the Czech Republic", "Prague"), ("Scotland", "Edinburgh"),
)
HELDOUT_OPPOSITES = (
    ("strong", "weak"), ("thick", "thin"), ("loud", "quiet"), ("push", "pull"), ("buy", "sell"),
    ("clean", "dirty"), ("true", "false"), ("good", "bad"), ("love", "hate"), ("cheap", "expensive"),
    ("north", "south"), ("east", "west"), ("asleep", "awake"), ("inside", "outside"), ("near", "far"),
    ("alive", "dead"), ("above", "below"), ("before", "after"), ("always", "never"), ("shallow", "deep"),
)
FACTS = (
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which planet is closest to the sun?", "Mercury"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What color do you get when you mix blue and yellow?", "green"),
    ("What color is a ripe banana?", "yellow"),
    ("What is frozen water called?", "ice"),
    ("What do bees make?", "honey"),
    ("Which organ pumps blood through the body?", "heart"),
    ("What shape has exactly three sides?", "triangle"),
    ("On which continent is Egypt?", "Africa"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What language is mainly spoken in Mexico?", "Spanish"),
    ("Which season comes after winter?", "spring"),
    ("Which day comes after Monday?", "Tuesday"),
    ("Which month comes after March?", "April"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("What is the largest mammal on Earth?", "blue whale"),
    ("Which animal is called the king of the jungle?", "lion"),
    ("What gas do humans need to breathe in to live?", "oxygen"),
)
CAPITAL_FRAMES = (
    "Which city is the capital of {0}? Reply with the city only.",
    "Name the capital city of {0}, in as few words as possible.",
    "In one or two words: what city is the seat of government of {0}?",
)
OPPOSITE_FRAMES = (
    "Give the antonym of '{0}' as a single word.",
    "Which word means the opposite of '{0}'? Answer with that word only.",
)
FACT_SUFFIX = " Reply in one or two words."


@dataclass(frozen=True, slots=True)
class Frame:
    """A sentence frame of the out-of-template word problems.

    `text` takes `person`, `other`, `item` and the numbers `a`, `b`, `c`, drawn from
    `ranges` (chosen so that no count goes negative); `solve` gives the answer, or None
    where the numbers do not fit the story (a share that does not divide) and are drawn
    again."""

    name: str
    text: str
    ranges: tuple[tuple[int, int], ...]
    solve: Callable[[tuple[int, ...]], int | None]


FRAMES = (
    Frame("shop-sold", "A shop had {a} {item} and sold {b}. How many {item} are left?",
          ((20, 90), (5, 19)), lambda n: n[0] - n[1]),
    Frame("shop-sold-twice", "A shop had {a} {item}. It sold {b} in the morning and {c} in the afternoon. "
          "How many {item} does the shop have left?", ((40, 99), (5, 19), (5, 19)),
          lambda n: n[0] - n[1] - n[2]),
    Frame("boxes", "{person} buys {a} boxes of {item} with {b} in each box. How many {item} is that in total?",
          ((2, 9), (3, 12)), lambda n: n[0] * n[1]),
    Frame("share", "{person} shares {a} {item} equally among {b} friends. How many {item} does each friend get?",
          ((12, 96), (2, 8)), lambda n: n[0] // n[1] if n[0] % n[1] == 0 else None),
    Frame("bus", "A bus has {a} passengers. At the first stop {b} get off and {c} get on. "
          "How many passengers are on the bus now?", ((10, 50), (2, 9), (2, 20)),
          lambda n: n[0] - n[1] + n[2]),
    Frame("ages", "{person} is {a} years old. {other} is {b} years older than {person}. "
          "How old will {other} be in {c} years?", ((5, 40), (2, 15), (2, 10)), lambda n: n[0] + n[1] + n[2]),
    Frame("rows", "A garden has {a} rows with {b} plants in each row, and {person} adds {c} more plants. "
          "How many plants are in the garden now?", ((2, 9), (3, 10), (2, 15)), lambda n: n[0] * n[1] + n[2]),
    Frame("money", "{person} had {a} dollars, spent {b} dollars on lunch and then earned {c} dollars. "
          "How many dollars does {person} have now?", ((10, 60), (2, 9), (5, 30)),
          lambda n: n[0] - n[1] + n[2]),
    Frame("pages", "{person} read {a} pages on Monday and twice as many pages on Tuesday. "
          "How many pages did {person} read on the two days together?", ((5, 40),), lambda n: 3 * n[0]),
    Frame("class", "A class has {a} students and {b} of them are girls. How many boys are in the class?",
          ((15, 35), (3, 14)), lambda n: n[0] - n[1]),
    Frame("savings", "{person} saves {a} dollars every week. How many dollars has {person} saved after {b} weeks?",
          ((2, 15), (2, 9)), lambda n: n[0] * n[1]),
    Frame("at-first", "After giving {a} {item} to {other}, {person} still has {b}. "
          "How many {item} did {person} have at first?", ((2, 30), (2, 30)), lambda n: n[0] + n[1]),
)


@dataclass(frozen=True, slots=True)
class Unit:
    """A conversion with an exact integer factor: one `big` is `factor` `small`."""

    one: str
    many: str
    small: str
    factor: int


UNITS = (
    Unit("hour", "hours", "minutes", 60), Unit("minute", "minutes", "seconds", 60),
    Unit("day", "days", "hours", 24), Unit("week", "weeks", "days", 7),
    Unit("year", "years", "months", 12), Unit("meter", "meters", "centimeters", 100),
    Unit("kilometer", "kilometers", "meters", 1000), Unit("kilogram", "kilograms", "grams", 1000),
    Unit("foot", "feet", "inches", 12), Unit("liter", "liters", "milliliters", 1000),
    Unit("yard", "yards", "feet", 3),
)
UNIT_FRAMES = (
    "How many {small} are in {n} {many}?",
    "Convert {n} {many} to {small}.",
    "{n} {many} is how many {small}?",
    "How many {small} are there in {n} {many}?",
)


@dataclass(frozen=True, slots=True)
class Draft:
    """A held-out request before it gets its id: messages, answer and how it is scored.

    `key` names the question asked (a fact, a problem's numbers), so that one kind never
    holds the same question twice in other words."""

    messages: list[dict[str, str]]
    answer: str
    scoring: Scoring
    key: str
    signature: Signature | None = None


@dataclass(frozen=True, slots=True)
class TrainingPrompts:
    """What the gate and the reasoner were trained on, in the forms prompts are compared by."""

    texts: frozenset[str]
    signatures: frozenset[Signature]


def training_prompts() -> TrainingPrompts:
    """The gate's training prompts and the shipped reasoner's problems."""
    from agentstack.offline.training.recipes import REASONER_PROBLEMS

    tasks = gate_tasks("train")
    problems = [p for _, p in reasoner_problems(REASONER_PROBLEMS)]
    return TrainingPrompts(
        texts=frozenset({t.prompt for t in tasks} | {p.text for p in problems}),
        signatures=frozenset({t.signature for t in tasks if t.signature} | {p.signature for p in problems}),
    )


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _people(rng: random.Random) -> dict[str, str]:
    person, other = rng.sample(HELDOUT_NAMES, 2)
    return {"person": person, "other": other, "item": rng.choice(HELDOUT_ITEMS)}


def _word_problem(rng: random.Random) -> Draft:
    frame = rng.choice(FRAMES)
    while True:
        numbers = tuple(rng.randint(low, high) for low, high in frame.ranges)
        answer = frame.solve(numbers)
        if answer is not None:
            break
    signature = (f"ood:{frame.name}", numbers)
    return Draft(_user(frame.text.format(**_people(rng), **dict(zip("abc", numbers)))), str(answer), "number",
                 str(signature), signature)


def _conversion(rng: random.Random) -> Draft:
    unit, n = rng.choice(UNITS), rng.randint(2, 12)
    text = rng.choice(UNIT_FRAMES).format(small=unit.small, n=n, many=unit.many)
    signature = (f"units:{unit.many}->{unit.small}", (n,))
    return Draft(_user(text), str(n * unit.factor), "number", str(signature), signature)


def _fact(rng: random.Random) -> Draft:
    pool = rng.choice(("capital", "opposite", "fact"))
    if pool == "capital":
        country, city = rng.choice(HELDOUT_CAPITALS)
        return Draft(_user(rng.choice(CAPITAL_FRAMES).format(country)), city, "text", f"capital:{country}")
    if pool == "opposite":
        word, other = rng.choice(HELDOUT_OPPOSITES)
        return Draft(_user(rng.choice(OPPOSITE_FRAMES).format(word)), other, "text", f"opposite:{word}")
    question, answer = rng.choice(FACTS)
    return Draft(_user(question + FACT_SUFFIX), answer, "text", question)


def _exchange(first: str, reply: str, follow_up: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": first}, {"role": "assistant", "content": reply},
            {"role": "user", "content": follow_up}]


def _dialogue_count(rng: random.Random) -> Draft:
    people, a = _people(rng), rng.randint(8, 40)
    b = rng.randint(2, a - 1)
    item = people["item"]
    return Draft(_exchange(f"I have {a} {item}.", f"Okay, you have {a} {item}.",
                           f"I give {b} of them to {people['other']}. How many {item} do I have left?"),
                 str(a - b), "number", f"count:{a}-{b}", ("dialogue:count", (a, b)))


def _dialogue_times(rng: random.Random) -> Draft:
    a, b, k = rng.randint(2, 30), rng.randint(2, 30), rng.choice((2, 3))
    word = {2: "double", 3: "triple"}[k]
    return Draft(_exchange(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.",
                           f"And if you {word} that number?"),
                 str((a + b) * k), "number", f"times:{a}+{b}*{k}", ("dialogue:times", (a, b, k)))


def _dialogue_units(rng: random.Random) -> Draft:
    unit, n = rng.choice(UNITS), rng.randint(2, 12)
    return Draft(_exchange(f"How many {unit.small} are in one {unit.one}?",
                           f"There are {unit.factor} {unit.small} in one {unit.one}.",
                           f"Then how many {unit.small} are in {n} {unit.many}?"),
                 str(n * unit.factor), "number", f"units:{unit.many}:{n}",
                 (f"dialogue:units:{unit.many}->{unit.small}", (n,)))


def _dialogue_capital(rng: random.Random) -> Draft:
    (first, city), (second, answer) = rng.sample(HELDOUT_CAPITALS, 2)
    return Draft(_exchange(f"What is the capital of {first}?", f"{city}.",
                           f"And the capital of {second}? Just the city, please."), answer, "text",
                 f"capital:{first}>{second}")


def _dialogue_opposite(rng: random.Random) -> Draft:
    (first, other), (second, answer) = rng.sample(HELDOUT_OPPOSITES, 2)
    return Draft(_exchange(f"What is the opposite of '{first}'?", f"{other.capitalize()}.",
                           f"And the opposite of '{second}'? One word."), answer, "text",
                 f"opposite:{first}>{second}")


DIALOGUES: tuple[Callable[[random.Random], Draft], ...] = (
    _dialogue_count, _dialogue_times, _dialogue_units, _dialogue_capital, _dialogue_opposite,
)
BUILDERS: dict[TaskKind, Sequence[Callable[[random.Random], Draft]]] = {
    "ood-arith": (_word_problem,), "units": (_conversion,), "multi-turn": DIALOGUES, "facts": (_fact,),
}


def _out_of_template(rng: random.Random, kind: TaskKind, count: int, exclude: TrainingPrompts) -> list[Task]:
    """`count` distinct requests of `kind`; the builders take turns, so each is represented."""
    builders = BUILDERS[kind]
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < count:
        draft = builders[attempts % len(builders)](rng)
        attempts += 1
        if (draft.key in seen or draft.messages[-1]["content"] in exclude.texts
                or draft.signature in exclude.signatures):
            continue
        seen.add(draft.key)
        tasks.append(Task(id=f"{PREFIX}:{kind}:{len(tasks)}", kind=kind, messages=draft.messages,
                          answer=draft.answer, scoring=draft.scoring, signature=draft.signature))
    return tasks


def _in_template(rng: random.Random, kind: TaskKind, count: int, exclude: TrainingPrompts) -> list[Task]:
    if kind == "tool":
        return tool_tasks(rng, count, "test", PREFIX, exclude.texts)
    if kind == "chat":
        return chat_tasks(rng, count, "test", PREFIX)
    return arith_tasks(rng, kind, count, PREFIX, exclude.texts, exclude.signatures)


def heldout_tasks(sizes: Mapping[TaskKind, int] = HELDOUT_SIZES) -> list[Task]:
    """The held-out evaluation set, kind by kind in `HELDOUT_KINDS` order.

    Each kind draws from its own seeded stream, so resizing one kind leaves the others'
    prompts as they are."""
    exclude = training_prompts()
    tasks: list[Task] = []
    for kind in HELDOUT_KINDS:
        rng = random.Random(f"{SEEDS['heldout']}:{kind}")
        build = _in_template if kind in IN_TEMPLATE_KINDS else _out_of_template
        tasks += build(rng, kind, sizes[kind], exclude)
    return tasks


def template_part(kind: str) -> TemplatePart:
    """Is `kind` built like the training prompts, or phrased and built otherwise?"""
    return "in-template" if kind in IN_TEMPLATE_KINDS else "out-of-template"
