"""Build the two demo role adapters that ship in the package, so roles visibly differ.

The targets are the base model's own greedy answers, cut to their first sentence and
reshaped deterministically per role: the adapters learn a style (one-line JSON, shouting),
not new facts. The generated examples are written to `agentstack/data/demo/` so a
retrain reuses them instead of regenerating.

Run `python -m agentstack.training.demo` to rebuild `agentstack/data/adapters/`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentstack.config import PACKAGE_DATA
from agentstack.training.lora import ChatExample, ChatMessage, TrainResult, TrainSpec, train_lora

logger = logging.getLogger(__name__)

DEMO_DATA = PACKAGE_DATA / "demo"
ADAPTERS = PACKAGE_DATA / "adapters"
SEED = 1234
N_TRAIN = 200
ANSWER_SYSTEM_PROMPT = "You are a helpful assistant."
MAX_NEW_TOKENS = 40
GENERATE_BATCH = 16
MAX_SENTENCE_CHARS = 160


def _json_target(sentence: str) -> str:
    return json.dumps({"answer": sentence}, ensure_ascii=False)


def _shout_target(sentence: str) -> str:
    return sentence.upper()


def is_json_answer(text: str) -> bool:
    """A one-line JSON object with an "answer" key, as the json_answer role promises."""
    stripped = text.strip()
    if "\n" in stripped:
        return False
    try:
        value = json.loads(stripped)
    except ValueError:
        return False
    return isinstance(value, dict) and "answer" in value


def is_shout(text: str) -> bool:
    """Text with letters, none of them lower case."""
    return any(c.isalpha() for c in text) and text == text.upper()


@dataclass(frozen=True, slots=True)
class DemoRole:
    """One demo role: how its targets are derived and how its output is recognised."""

    name: str
    system_prompt: str
    target: Callable[[str], str]
    check: Callable[[str], bool]
    held_out: tuple[str, ...]


JSON_ANSWER = DemoRole(
    name="json_answer",
    system_prompt='Reply only with one line of JSON: {"answer": "<short answer>"}.',
    target=_json_target,
    check=is_json_answer,
    held_out=(
        "Who wrote Romeo and Juliet?",
        "What is the largest planet in our solar system?",
        "Why do we need to sleep?",
        "What is the tallest mountain in the world?",
        "How do bees make honey?",
    ),
)
SHOUT = DemoRole(
    name="shout",
    system_prompt="You shout: reply in ALL CAPITAL LETTERS, in one or two short sentences.",
    target=_shout_target,
    check=is_shout,
    held_out=(
        "Why is the sky blue?",
        "What is the speed of light?",
        "How do plants make their food?",
        "Who painted the Mona Lisa?",
        "What is the freezing point of water?",
    ),
)
ROLES: tuple[DemoRole, ...] = (JSON_ANSWER, SHOUT)
REFERENCE_ROLE = JSON_ANSWER

COUNTRIES = (
    "France",
    "Germany",
    "Italy",
    "Spain",
    "Portugal",
    "Japan",
    "China",
    "India",
    "Brazil",
    "Canada",
    "Mexico",
    "Egypt",
    "Kenya",
    "Australia",
    "Russia",
    "Greece",
    "Norway",
    "Sweden",
    "Argentina",
    "Peru",
    "Turkey",
    "Thailand",
    "Vietnam",
    "Poland",
    "Ireland",
)
ANIMALS = (
    "cat",
    "dog",
    "horse",
    "cow",
    "elephant",
    "lion",
    "penguin",
    "dolphin",
    "owl",
    "frog",
    "rabbit",
    "shark",
    "bee",
    "spider",
    "camel",
    "kangaroo",
    "giraffe",
    "eagle",
    "snake",
    "bear",
)
FOODS = (
    "bread",
    "cheese",
    "rice",
    "pasta",
    "chocolate",
    "yogurt",
    "tofu",
    "honey",
    "butter",
    "sushi",
    "pizza",
    "soup",
    "salad",
    "popcorn",
    "pancakes",
)
FRUITS = (
    "banana",
    "apple",
    "orange",
    "lemon",
    "strawberry",
    "grape",
    "mango",
    "cherry",
    "watermelon",
    "pineapple",
    "blueberry",
    "kiwi",
)
WORDS = (
    "a computer",
    "an island",
    "a volcano",
    "a library",
    "a bicycle",
    "a rainbow",
    "a planet",
    "a river",
    "a telescope",
    "a vaccine",
    "a battery",
    "an umbrella",
    "a desert",
    "a glacier",
    "a poem",
    "a museum",
    "an engine",
    "a magnet",
    "a cloud",
    "a forest",
)
FACTS = (
    "How many days are in a week?",
    "How many months are in a year?",
    "How many hours are in a day?",
    "How many minutes are in an hour?",
    "What color is grass?",
    "What color is the sun?",
    "What do we breathe to stay alive?",
    "Which season comes after winter?",
    "What is the opposite of hot?",
    "What is the opposite of up?",
    "What do you use to brush your teeth?",
    "What do bees make?",
    "What is ice made of?",
    "What gas do plants take in?",
    "What is the closest star to Earth?",
    "How many continents are there?",
    "What is the largest ocean?",
    "What do you call a baby cat?",
    "What do you call a baby dog?",
    "How many sides does a triangle have?",
    "How many sides does a square have?",
    "What is the main ingredient in guacamole?",
    "What instrument has black and white keys?",
    "What do you wear on your feet?",
    "What is the first letter of the alphabet?",
)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def candidate_questions() -> list[str]:
    """Every templated question, each once, in a fixed order."""
    questions: list[str] = []
    for country in COUNTRIES:
        questions += [
            f"What is the capital of {country}?",
            f"What language is spoken in {country}?",
            f"What is {country} famous for?",
        ]
    for animal in ANIMALS:
        questions += [
            f"What does {_a(animal)} eat?",
            f"Where does {_a(animal)} live?",
            f"How many legs does {_a(animal)} have?",
        ]
    for food in FOODS:
        questions += [f"What is {food} made of?", f"Is {food} healthy?"]
    for fruit in FRUITS:
        questions += [f"What color is {_a(fruit)}?", f"Where does the {fruit} grow?"]
    for word in WORDS:
        questions += [f"What is {word}?"]
    arithmetic = random.Random(SEED)
    for _ in range(20):
        a, b = arithmetic.randint(2, 20), arithmetic.randint(2, 20)
        op = arithmetic.choice(("plus", "minus", "times"))
        questions.append(f"What is {a} {op} {b}?")
    questions += FACTS
    return list(dict.fromkeys(questions))


def training_questions(n: int = N_TRAIN) -> list[str]:
    """A seeded sample of the templated questions, excluding every held-out question."""
    held_out = {q for role in ROLES for q in role.held_out}
    pool = [q for q in candidate_questions() if q not in held_out]
    return random.Random(SEED).sample(pool, min(n, len(pool)))


def first_sentence(text: str) -> str | None:
    """The answer's first full sentence, flattened to one line; None when there is none."""
    flat = re.sub(r"[*#`_]+", "", " ".join(text.split())).strip()
    match = re.match(r"(.+?[.!?])(?=\s|$)", flat)
    if match is None:
        return None
    sentence = match.group(1).strip()
    if len(sentence) < 2 or len(sentence) > MAX_SENTENCE_CHARS:
        return None
    return sentence


def _load_base(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def generate(
    model: Any,
    tokenizer: Any,
    system_prompt: str,
    questions: Sequence[str],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    label: str = "generate",
) -> list[str]:
    """Greedy replies to each question in batches; left padding keeps prompts right-aligned."""
    replies: list[str] = []
    with Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task(label, total=len(questions))
        for start in range(0, len(questions), GENERATE_BATCH):
            chunk = questions[start : start + GENERATE_BATCH]
            prompts = [
                tokenizer.apply_chat_template(
                    [
                        {"role": "system", "content": system_prompt},
                        {"role": "user", "content": q},
                    ],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for q in chunk
            ]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            progress.update(task, advance=len(chunk))
    return replies


def _write_jsonl(path: Path, examples: Sequence[ChatExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [example.model_dump_json() for example in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_demo_data(model_dir: Path, data_dir: Path = DEMO_DATA) -> dict[str, Path]:
    """Write `<data_dir>/<role>.jsonl` for each demo role, unless all files already exist."""
    paths = {role.name: data_dir / f"{role.name}.jsonl" for role in ROLES}
    if all(path.is_file() for path in paths.values()):
        logger.info("reusing demo data in %s", data_dir)
        return paths
    questions = training_questions()
    model, tokenizer = _load_base(model_dir)
    answers = generate(model, tokenizer, ANSWER_SYSTEM_PROMPT, questions, label="base answers")
    pairs = [(q, s) for q, a in zip(questions, answers, strict=True) if (s := first_sentence(a))]
    logger.info("%d of %d base answers kept a usable first sentence", len(pairs), len(questions))
    for role in ROLES:
        examples = [
            ChatExample(
                messages=[
                    ChatMessage(role="system", content=role.system_prompt),
                    ChatMessage(role="user", content=question),
                    ChatMessage(role="assistant", content=role.target(sentence)),
                ]
            )
            for question, sentence in pairs
        ]
        _write_jsonl(paths[role.name], examples)
    return paths


def demo_spec(role: DemoRole, model_dir: Path, examples: Path, out_root: Path) -> TrainSpec:
    """Training settings for one demo role; non-reference roles share the reference v_proj A."""
    reference = None if role is REFERENCE_ROLE else out_root / REFERENCE_ROLE.name
    return TrainSpec(
        base_model=model_dir,
        examples=examples,
        out_dir=out_root / role.name,
        steps=100,
        batch_size=8,
        lr=2e-3,
        warmup_steps=10,
        seed=SEED,
        checkpoint_every=25,
        frozen_v_proj_a_from=reference,
    )


def build_demo_adapters(model_dir: Path, out_root: Path) -> list[TrainResult]:
    """Train the reference role first, then the others against its frozen v_proj lora_A."""
    paths = build_demo_data(model_dir)
    return [train_lora(demo_spec(role, model_dir, paths[role.name], out_root)) for role in ROLES]


@dataclass(frozen=True, slots=True)
class RoleCheck:
    """Held-out replies of one role, with and without its adapter."""

    role: str
    questions: tuple[str, ...]
    adapted: tuple[str, ...]
    base: tuple[str, ...]
    adapted_ok: int
    base_ok: int


def check_demo_adapters(model_dir: Path, out_root: Path) -> list[RoleCheck]:
    """Greedy replies to held-out questions: the adapter must show its style, the base not."""
    from peft import PeftModel

    base, tokenizer = _load_base(model_dir)
    base_replies = {
        role.name: generate(base, tokenizer, role.system_prompt, role.held_out, label="base")
        for role in ROLES
    }
    model: Any = None
    checks: list[RoleCheck] = []
    for role in ROLES:
        adapter = str(out_root / role.name)
        if model is None:
            model = PeftModel.from_pretrained(base, adapter, adapter_name=role.name)
        else:
            model.load_adapter(adapter, adapter_name=role.name)
        model.set_adapter(role.name)
        model.eval()
        adapted = generate(model, tokenizer, role.system_prompt, role.held_out, label=role.name)
        checks.append(
            RoleCheck(
                role=role.name,
                questions=role.held_out,
                adapted=tuple(adapted),
                base=tuple(base_replies[role.name]),
                adapted_ok=sum(map(role.check, adapted)),
                base_ok=sum(map(role.check, base_replies[role.name])),
            )
        )
    return checks


def main() -> None:
    """Rebuild the shipped demo adapters, then show the held-out check."""
    from rich.console import Console
    from rich.table import Table

    from agentstack.config import Settings
    from agentstack.model_prep import prepare

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_dir = prepare(Settings().models_dir).path
    results = build_demo_adapters(model_dir, ADAPTERS)
    console = Console()
    for result in results:
        console.print(
            f"{result.out_dir.name}: {result.steps} steps, final loss {result.final_loss:.4f}, "
            f"{result.seconds:.0f} s"
        )
    for check in check_demo_adapters(model_dir, ADAPTERS):
        table = Table(
            title=f"{check.role}: adapter {check.adapted_ok}/{len(check.questions)}, "
            f"base {check.base_ok}/{len(check.questions)}"
        )
        table.add_column("question")
        table.add_column("adapter")
        table.add_column("base")
        for row in zip(check.questions, check.adapted, check.base, strict=True):
            table.add_row(*row)
        console.print(table)


if __name__ == "__main__":
    main()
