"""The gate's task family: fixed by seed, answers checked by code, scoring by kind."""

from __future__ import annotations

import random
import re

from routers.offline.scoring import final_answer_text, reasoning_text
from routers.offline.tasks import gate_tasks, make_problem, reasoner_chats
from routers.prompt import route_messages


def test_same_seed_same_tasks() -> None:
    first, again = gate_tasks("test"), gate_tasks("test")
    assert [(t.id, t.messages, t.answer) for t in first] == [(t.id, t.messages, t.answer) for t in again]


def test_train_and_test_prompts_are_disjoint() -> None:
    train = {t.messages[-1]["content"] for t in gate_tasks("train")}
    test = {t.messages[-1]["content"] for t in gate_tasks("test")}
    assert not train & test


def test_worked_steps_reach_the_answer() -> None:
    rng = random.Random(5)
    for _ in range(200):
        problem = make_problem(rng, rng.choice((1, 3, 4)))
        value = int(problem.steps[0].split()[-1].rstrip("."))
        for step in problem.steps[1:]:
            a, op, b, _, result = step.rstrip(".").split()
            assert int(a) == value
            value = {"+": value + int(b), "-": value - int(b), "*": value * int(b)}[op]
            assert value == int(result) and value >= 0
        assert value == problem.answer


def test_hard_problems_take_several_steps() -> None:
    tasks = gate_tasks("train")
    assert all(len(t.worked) == 2 for t in tasks if t.kind == "arith-easy")
    assert all(len(t.worked) in (4, 5) for t in tasks if t.kind == "arith-hard")


def test_scoring() -> None:
    arith = next(t for t in gate_tasks("test") if t.kind == "arith-hard")
    assert arith.score(f"<think>so 3 + 4 = 7</think>\nAnswer: {arith.answer}")
    assert not arith.score(f"<think>the answer is {arith.answer}</think>\nAnswer: {int(arith.answer) + 1}")
    chat = next(t for t in gate_tasks("test") if t.kind == "chat")
    assert chat.score(f"{chat.answer}.") and not chat.score("I do not know.")
    assert chat.score(f"It is {chat.answer}.") and not chat.score(f"Not {chat.answer}.")
    tool = next(t for t in gate_tasks("test") if t.kind == "tool")
    assert not tool.score('{"name": "nothing", "arguments": {}}')


def test_reasoning_split() -> None:
    text = "<think>5 + 3 = 8.</think>\nAnswer: 8"
    assert reasoning_text(text) == "<think>5 + 3 = 8.</think>"
    assert final_answer_text(text) == "\nAnswer: 8"
    assert reasoning_text("Answer: 8") == ""
    assert reasoning_text("<think>5 + 3 = 8. 8 * 2") == "<think>5 + 3 = 8. 8 * 2"


def test_reasoner_chats_have_both_paths() -> None:
    chats = reasoner_chats(30)
    think = [c for c in chats if c["id"].endswith(":think")]
    direct = [c for c in chats if c["id"].endswith(":direct")]
    assert len(think) == len(direct) == 30
    assert all(re.fullmatch(r"<think>.*</think>\nAnswer: \d+", c["messages"][-1]["content"], re.S) for c in think)
    assert all(re.fullmatch(r"Answer: \d+", c["messages"][-1]["content"]) for c in direct)
    assert think[0]["messages"][:-1] == route_messages(think[0]["messages"][1:-1], None, think=True)


def test_shipped_reasoner_saw_no_gate_prompt(tmp_path: object) -> None:
    """The reasoner's data, regenerated, is the file its model card names, and it holds
    none of the gate's training or held-out problems."""
    import hashlib
    from pathlib import Path

    from agentstack.config import PACKAGE_DATA
    from agentstack.offline.training.recipes import REASONER_PROBLEMS
    from routers.offline.tasks import write_reasoner_data

    out = Path(str(tmp_path)) / "reasoner.jsonl"
    write_reasoner_data(out, REASONER_PROBLEMS)
    card = (PACKAGE_DATA / "adapters" / "reasoner" / "README.md").read_text()
    assert hashlib.sha256(out.read_bytes()).hexdigest()[:16] in card
    prompts = {c["messages"][-2]["content"] for c in reasoner_chats(REASONER_PROBLEMS)}
    gate = {t.messages[-1]["content"] for part in ("train", "test") for t in gate_tasks(part)}  # type: ignore[arg-type]
    assert not prompts & gate
