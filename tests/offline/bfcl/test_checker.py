"""Scoring goes through bfcl-eval's own AST checker."""

from __future__ import annotations

import copy

from agentstack.offline.bfcl.checker import check
from agentstack.offline.bfcl.dataset import examples


def test_reference_answers_pass_and_altered_ones_fail() -> None:
    example = examples("multiple", "dev")[0]
    calls = example.reference_calls()
    assert check(example, calls).correct
    wrong_name = [{**calls[0], "name": example.functions[-1]["name"] + "_x"}]
    assert not check(example, wrong_name).correct
    altered = copy.deepcopy(calls)
    param = next(iter(altered[0]["arguments"]))
    altered[0]["arguments"][param] = "surely not this"
    verdict = check(example, altered)
    assert not verdict.correct and verdict.error


def test_parallel_calls_are_scored_in_any_order() -> None:
    example = examples("parallel", "dev")[0]
    calls = example.reference_calls()
    assert len(calls) > 1
    assert check(example, list(reversed(calls))).correct
    assert not check(example, calls[:1]).correct


def test_irrelevance_wants_no_call() -> None:
    example = examples("irrelevance")[0]
    assert check(example, []).correct
    name = example.functions[0]["name"]
    assert not check(example, [{"name": name, "arguments": {}}]).correct
