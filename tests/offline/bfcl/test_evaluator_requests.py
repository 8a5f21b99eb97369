"""The made-up arithmetic requests: each asks for arithmetic a listed evaluator can do, and
the training data teaches it as the answer only where an evaluator is listed."""

from __future__ import annotations

import re

from agentstack.chat.tool_prompts import function_names
from agentstack.offline.bfcl.evaluator_requests import EVALUATOR_PREFIX, EVALUATORS, evaluator_examples
from agentstack.offline.bfcl.training_data import DATA_SEED, EVALUATOR_REQUESTS, listed_examples, train_examples
from graphs.tools import calculator

NUMBER = re.compile(r"\d+(?:\.\d+)?")


def test_each_request_is_one_call_of_its_evaluator_with_the_question_s_arithmetic() -> None:
    requests = evaluator_examples(EVALUATOR_REQUESTS, DATA_SEED)
    assert len({r.messages[0]["content"] for r in requests}) == len(requests)
    for request in requests:
        question = request.messages[0]["content"]
        [call] = request.reference_calls()
        [function] = request.functions
        assert call["name"] == function["name"]
        [expression] = call["arguments"].values()
        assert list(call["arguments"]) == function["parameters"]["required"]
        assert sorted(NUMBER.findall(expression)) == sorted(NUMBER.findall(question)), question
        float(calculator.invoke({"expression": expression}))  # the workflows' own calculator takes it


def test_requests_vary_the_evaluator_and_the_operation() -> None:
    requests = evaluator_examples(EVALUATOR_REQUESTS, DATA_SEED)
    assert {r.functions[0]["name"] for r in requests} == {e.name for e in EVALUATORS}
    expressions = [str(next(iter(r.reference_calls()[0]["arguments"].values()))) for r in requests]
    for operator in ("+", " - ", "*", "/", "**", "%", "("):
        assert any(operator in e for e in expressions), operator
    assert evaluator_examples(EVALUATOR_REQUESTS, DATA_SEED) == requests
    assert evaluator_examples(EVALUATOR_REQUESTS, DATA_SEED + 1) != requests


def test_an_evaluator_is_listed_only_for_its_own_request_and_its_copies_say_none() -> None:
    """Arithmetic is a call where an evaluator is listed and `none` where it is not; an
    evaluator never sits among another question's distractors, where BFCL's math questions
    (which it could also answer) would make a second right answer."""
    items = listed_examples(train_examples())
    evaluators = {e.description for e in EVALUATORS}  # masking renames, descriptions stay
    answered = [i for i in items if i.id.startswith(EVALUATOR_PREFIX) and i.calls]
    copies = [i for i in items if i.id.startswith(EVALUATOR_PREFIX) and not i.calls]
    assert len(answered) == EVALUATOR_REQUESTS and copies
    for item in answered:
        assert len(item.calls) == 1 and item.calls[0]["name"] in function_names(item.functions)
    answered_ids = {i.id for i in answered}
    for item in items:
        listed = [f for f in item.functions if f["description"] in evaluators]
        assert len(listed) == (item.id in answered_ids), item.id
