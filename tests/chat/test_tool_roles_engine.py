"""The tool roles' grammars reach the engine: held to them, even the base model (which
was never trained on the formats) answers with listed names and well-formed calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentstack.chat.call_grammar import MAX_LINES, call_lines_grammar, selection_grammar
from agentstack.chat.tool_prompts import NONE_SELECTED, arguments_messages, parse_calls, selector_messages
from agentstack.config import Settings
from agentstack.service import Service

pytestmark = pytest.mark.slow

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City, Country"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "source": {"type": "string"}, "target": {"type": "string"}},
            "required": ["amount", "source", "target"]}}},
]
QUESTION = [{"role": "user", "content": "How warm is it in Lisbon right now, in celsius?"}]


async def test_grammars_hold_an_untrained_model_to_the_answer_formats(model_dir: Path, tmp_path: Path) -> None:
    service = Service(Settings(model=model_dir, cache_dir=tmp_path, kv_cache_space_gib=1), gate_dir=None)
    await service.start()
    try:
        base = service.base_name
        free = await service.complete(base, selector_messages(QUESTION, TOOLS), 24)
        # Room for the grammar's most lines (an untrained model may repeat a name until
        # then), so the reply ends by the grammar, not cut inside a name by the budget.
        picked = await service.complete(base, selector_messages(QUESTION, TOOLS), 12 * MAX_LINES,
                                        grammar=selection_grammar(TOOLS))
        filled = await service.complete(base, arguments_messages(QUESTION, TOOLS, "get_weather"), 96,
                                        grammar=call_lines_grammar(TOOLS[:1], allow_none=False))
    finally:
        await service.stop()
    names = {"get_weather", "convert_currency", NONE_SELECTED}
    assert not set(free.text.strip().splitlines()) <= names, "the base model alone writes prose"
    assert picked.text.strip().splitlines() and set(picked.text.strip().splitlines()) <= names
    calls = parse_calls(filled.text, TOOLS)
    assert calls and len(calls) == len(filled.text.strip().splitlines())
    for call in calls:
        assert call["name"] == "get_weather"
        assert set(call["arguments"]) == {"city", "unit"}, json.dumps(call)
        assert call["arguments"]["unit"] in ("celsius", "fahrenheit")
