"""The grammars the tool roles are held to: every answer a role was trained to write
passes, and what a caller could not use (an unlisted name, a missing required
parameter, a wrong type, a second line for the selector's `none`) does not."""

from __future__ import annotations

import pytest
from xgrammar.testing import _is_grammar_accept_string as accepts

from agentstack.chat.call_grammar import call_lines_grammar, selection_grammar
from agentstack.chat.tool_prompts import calls_text, selection_text
from agentstack.offline.bfcl.training_data import listed_examples, train_examples

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City, Country"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer"}},
        "required": ["city"]}}}
ROOT_NAMED = {"name": "solve", "description": "Roots of a polynomial.",
              "parameters": {"type": "dict", "properties": {"root_type": {"type": "string"}}, "required": []}}


@pytest.fixture(scope="module")
def trained() -> list:
    return listed_examples(train_examples()[:150])


def test_every_trained_answer_is_accepted(trained: list) -> None:
    """The grammars follow the trained formats: a role that was right stays right."""
    rejected = []
    for item in trained:
        names = [c["name"] for c in item.calls]
        assert accepts(selection_grammar(item.functions), selection_text(names))
        assert accepts(call_lines_grammar(item.functions, allow_none=True),
                       calls_text(item.calls) if item.calls else "none")
        for name in dict.fromkeys(names):
            function = [f for f in item.functions if f["name"] == name]
            if not accepts(call_lines_grammar(function, allow_none=False),
                           calls_text([c for c in item.calls if c["name"] == name])):
                rejected.append(item.id)
    # BFCL's own answers sometimes break their schema (a key out of the listed order, a
    # string for an array); those few may be refused, nothing more.
    assert len(rejected) <= len(trained) // 50, rejected


def test_selector_names_only_listed_functions() -> None:
    grammar = selection_grammar([WEATHER, ROOT_NAMED])
    assert accepts(grammar, "get_weather")
    assert accepts(grammar, "get_weather\nsolve")
    assert accepts(grammar, "none")
    assert not accepts(grammar, "get_wether")
    assert not accepts(grammar, "none\nget_weather")
    assert not accepts(grammar, "get_weather ")


def test_a_call_needs_its_required_parameters_and_their_types() -> None:
    grammar = call_lines_grammar([WEATHER], allow_none=False)
    assert accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Paris, France"}}')
    assert accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Paris, France", "unit": "c"}}\n'
                            '{"name": "get_weather", "arguments": {"city": "Rome, Italy", "days": 3}}')
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {}}')
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}')
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}')
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Paris", "town": "Paris"}}')
    assert not accepts(grammar, "none")


def test_single_may_decline_and_names_stay_literal() -> None:
    """`single` may answer none; a parameter that happens to be called root_type stays
    the parameter's name (the grammar's own rules are renamed around it)."""
    grammar = call_lines_grammar([WEATHER, ROOT_NAMED], allow_none=True)
    assert accepts(grammar, "none")
    assert accepts(grammar, '{"name": "solve", "arguments": {"root_type": "real"}}')
    assert accepts(grammar, '{"name": "solve", "arguments": {}}')
    assert not accepts(grammar, '{"name": "solve", "arguments": {"call_type": "real"}}')
