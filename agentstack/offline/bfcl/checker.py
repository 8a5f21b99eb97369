"""Scoring with bfcl-eval's own AST checker: our calls in, its verdict out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentstack.offline.bfcl.dataset import BfclExample
from agentstack.chat.tool_prompts import Call

# The checker looks a model up only to know whether it rewrote dotted function names to
# underscores (as OpenAI-style function calling must). Ours keeps names as written, like
# BFCL's prompt-mode models; this entry is one of those.
CHECKER_MODEL_NAME = "Qwen_Qwen3-0.6B"


@dataclass(frozen=True, slots=True)
class Verdict:
    correct: bool
    error: str = ""


def decoded(calls: list[Call], category: str) -> list[dict[str, dict[str, Any]]]:
    """BFCL's decoded-output shape `[{name: {param: value}}]`.

    For Java and JavaScript, BFCL's checker takes every value as source text (a string),
    which is what its own decoders produce; JSON values are written back as such.
    """
    from bfcl_eval.utils import is_java, is_js

    as_text = is_java(category) or is_js(category)
    return [
        {
            call["name"]: {
                k: v if not as_text or isinstance(v, str) else json.dumps(v)
                for k, v in call["arguments"].items()
            }
        }
        for call in calls
    ]


def answered_functions(example: BfclExample) -> list[dict[str, Any]]:
    """The listed functions the ground truth calls, first: BFCL's checker reads a simple
    entry's function as the first of the list, which a shuffled or toolbox listing moves."""
    expected = {name for answer in example.ground_truth or [] for name in answer}
    return sorted(example.functions, key=lambda f: f["name"] not in expected)


def check(example: BfclExample, calls: list[Call]) -> Verdict:
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.utils import (
        is_empty_output,
        is_function_calling_format_output,
        is_java,
        is_js,
        is_relevance_or_irrelevance,
    )

    output = decoded(calls, example.category)
    if is_relevance_or_irrelevance(example.category):
        wants_call = "irrelevance" not in example.category
        made_call = not is_empty_output(output)
        return Verdict(made_call == wants_call, "" if made_call == wants_call else "relevance")
    if not is_function_calling_format_output(output) or not output:
        return Verdict(False, "no call decoded")
    language = (
        Language.JAVA if is_java(example.category)
        else Language.JAVASCRIPT if is_js(example.category)
        else Language.PYTHON
    )
    try:
        result = ast_checker(answered_functions(example), output, example.ground_truth, language,
                             example.category, CHECKER_MODEL_NAME)
    except Exception as e:  # the checker's own failure on odd output counts as a miss
        return Verdict(False, f"checker: {type(e).__name__}: {e}")
    return Verdict(bool(result["valid"]), "; ".join(map(str, result.get("error", []))))
