"""Arithmetic requests for a general-purpose expression evaluator, made up for training.

BFCL's train split lists only task-specific functions (`math.factorial`,
`calculate_triangle_area`); none takes an arithmetic expression. Its irrelevance copies
taught the selector that "Calculate 13 * 8." among such functions is `none`, and it
carried that over to a listed calculator, the most common tool a workflow gives an agent.
These requests teach that an evaluator answers arithmetic: varied names, descriptions and
parameter names (so no one spelling marks it), varied phrasings, some in a short story.
They go through the same recipe as BFCL's entries (shuffled among unrelated distractors,
masked, and copied without the evaluator as `none`); they join no composed request, whose
parts must be functions of the distractor pool. Nothing here comes from an evaluation
category.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from agentstack.offline.bfcl.dataset import BfclExample

EVALUATOR_CATEGORY = "evaluator"
EVALUATOR_PREFIX = "evaluator:"


@dataclass(frozen=True, slots=True)
class _Evaluator:
    name: str
    description: str
    parameter: str
    parameter_description: str | None

    def function(self) -> dict[str, Any]:
        prop: dict[str, str] = {"type": "string"}
        if self.parameter_description:
            prop["description"] = self.parameter_description
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "dict", "properties": {self.parameter: prop}, "required": [self.parameter]}}


EVALUATORS = (
    _Evaluator("calculator", "Evaluate an arithmetic expression and return its value.", "expression",
               'The expression, e.g. "(2 + 3) * 4".'),
    _Evaluator("evaluate_expression", "Evaluates a mathematical expression written with + - * / ** and parentheses.",
               "expr", "Expression to evaluate."),
    _Evaluator("math_eval", "Compute the numeric result of a math formula.", "formula", "A formula such as 7 * 6."),
    _Evaluator("calc", "Simple calculator for basic arithmetic.", "input", "Arithmetic to compute, e.g. 100 / 4"),
    _Evaluator("arithmetic.evaluate", "Returns the result of an arithmetic expression.", "expression", None),
    _Evaluator("compute", "Calculate the value of an expression made of numbers and operators.", "query",
               "The calculation to perform."),
)

# (phrasing, expression) per operation; {a} {b} {c} are numbers.
_PHRASINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "*": (("What is {a} times {b}?", "{a} * {b}"), ("Calculate {a} * {b}.", "{a} * {b}"),
          ("Multiply {a} by {b}.", "{a} * {b}"), ("What's {a} multiplied by {b}?", "{a} * {b}"),
          ("Compute the product of {a} and {b}.", "{a} * {b}"),
          ("I bought {a} boxes with {b} pencils each. How many pencils is that?", "{a} * {b}")),
    "+": (("What is {a} plus {b}?", "{a} + {b}"), ("Add {a} and {b}.", "{a} + {b}"),
          ("Calculate {a} + {b}.", "{a} + {b}"), ("What's the sum of {a} and {b}?", "{a} + {b}"),
          ("I spent {a} dollars on Monday and {b} on Tuesday. How much in total?", "{a} + {b}")),
    "-": (("What is {a} minus {b}?", "{a} - {b}"), ("Subtract {b} from {a}.", "{a} - {b}"),
          ("Calculate {a} - {b}.", "{a} - {b}"),
          ("The trip is {a} km and I have driven {b} km. How far is left?", "{a} - {b}")),
    "/": (("Divide {a} by {b}.", "{a} / {b}"), ("What is {a} divided by {b}?", "{a} / {b}"),
          ("Calculate {a} / {b}.", "{a} / {b}"),
          ("Split a {a} dollar bill evenly among {b} people. How much does each pay?", "{a} / {b}")),
    "**": (("What is {a} to the power of {b}?", "{a} ** {b}"), ("Calculate {a} ** {b}.", "{a} ** {b}"),
           ("Compute {a} raised to the {b}th power.", "{a} ** {b}")),
    "%": (("What is the remainder of {a} divided by {b}?", "{a} % {b}"), ("Calculate {a} mod {b}.", "{a} % {b}")),
    "()": (("Calculate ({a} + {b}) * {c}.", "({a} + {b}) * {c}"), ("What is {a} * {b} + {c}?", "{a} * {b} + {c}"),
           ("Compute {a} - {b} * {c}.", "{a} - {b} * {c}"),
           ("Evaluate ({a} - {b}) / {c}.", "({a} - {b}) / {c}")),
}


def _number(operation: str, rng: random.Random) -> str:
    """A whole number, or now and then one with a decimal (never for a remainder)."""
    if operation != "%" and rng.random() < 0.15:
        return f"{rng.randint(1, 500)}.{rng.randint(1, 9)}"
    return str(rng.randint(2, 999))


def _numbers(operation: str, rng: random.Random) -> dict[str, str]:
    if operation == "**":
        return {"a": str(rng.randint(2, 20)), "b": str(rng.randint(2, 9))}
    return {"a": _number(operation, rng), "b": _number(operation, rng), "c": _number(operation, rng)}


def evaluator_examples(count: int, seed: int) -> list[BfclExample]:
    """`count` one-question requests, each answered by one call of one listed evaluator
    whose argument is the question's arithmetic, written with the question's numbers."""
    rng = random.Random(f"{seed}:evaluator")
    operations = sorted(_PHRASINGS)
    out = []
    for index in range(count):
        operation = operations[index % len(operations)]
        phrasing, expression = rng.choice(_PHRASINGS[operation])
        numbers = _numbers(operation, rng)
        evaluator = rng.choice(EVALUATORS)
        out.append(BfclExample.made_up(f"{EVALUATOR_PREFIX}{index}", EVALUATOR_CATEGORY, phrasing.format(**numbers),
                                       evaluator.function(), [{evaluator.parameter: expression.format(**numbers)}]))
    return out
