"""The conversation as the tool roles read it: any OpenAI conversation, calls and results
included, becomes plain turns that every chat model takes."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.messages.utils import convert_to_messages

from agentstack.chat.tool_prompts import TOOLS_PREAMBLE, selector_messages
from tests.conftest import TOOLS

CONVERSATION = [
    HumanMessage("What's the weather in Paris?"),
    AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
    ToolMessage("18 degrees, sunny", tool_call_id="call_1"),
    HumanMessage("And in Oslo?"),
]


def test_calls_and_results_become_plain_turns_a_chat_model_accepts() -> None:
    turns = selector_messages(convert_to_openai_messages(CONVERSATION[:3]), TOOLS)  # type: ignore[arg-type]
    assert turns[0]["role"] == "system" and TOOLS_PREAMBLE in turns[0]["content"]
    assert turns[1:] == [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"role": "user", "content": "18 degrees, sunny"},
    ]
    assert len(convert_to_messages(turns)) == len(turns)  # no turn needs a tool-call id


def test_tool_roles_read_the_request_at_hand_not_earlier_exchanges() -> None:
    history = [{"role": "system", "content": "Be brief."}, *convert_to_openai_messages(CONVERSATION)]
    turns = selector_messages(history, TOOLS)  # type: ignore[arg-type]
    assert turns[0]["content"].startswith("Be brief.")
    assert turns[1:] == [{"role": "user", "content": "And in Oslo?"}]


def test_developer_text_and_content_parts_are_read() -> None:
    turns = selector_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Rome?"}]},
    ], TOOLS)
    assert turns[0]["content"].startswith("Be brief.")
    assert turns[1:] == [{"role": "user", "content": "Weather in Rome?"}]
