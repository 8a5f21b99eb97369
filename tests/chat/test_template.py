"""Messages to template turns, and generated text back to tool calls and reasoning."""

from __future__ import annotations

import json

from agentstack.api.schemas import ChatMessage, NamedToolChoice, Tool
from agentstack.chat.template import (
    forced_call_schema,
    may_become_tool_call,
    parse_reply,
    render_messages,
    results_in_words,
)

TOOLS = [Tool.model_validate({"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})]


def msgs(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=r, content=c) for r, c in pairs]  # type: ignore[arg-type]


def test_role_prompt_comes_first_and_request_system_text_follows() -> None:
    turns = render_messages(msgs(("system", "Be brief."), ("user", "hi")),
                            system_prompt="You shout.", tools=None, think=False)
    assert turns == [{"role": "system", "content": "You shout.\n\nBe brief."}, {"role": "user", "content": "hi"}]


# A question, the call it got and that call's result.
CALL_AND_RESULT = [
    ChatMessage(role="user", content="weather?"),
    ChatMessage.model_validate({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}),
    ChatMessage(role="tool", content="sunny", tool_call_id="c1"),
]


def test_tools_and_past_calls_are_written_into_the_conversation() -> None:
    turns = render_messages(CALL_AND_RESULT, system_prompt=None, tools=TOOLS, think=False)
    assert '"name": "get_weather"' in turns[0]["content"]
    assert turns[2]["content"] == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert turns[3] == {"role": "tool", "content": "sunny"}


def test_without_tools_calls_and_results_read_as_sentences_without_markup() -> None:
    """A prompt without tools can only be answered in words; shown call markup, the model
    writes it back."""
    history = [*CALL_AND_RESULT, ChatMessage(role="tool", content="late", tool_call_id="unknown")]
    turns = render_messages(history, system_prompt=None, tools=None, think=False)
    assert turns == [{"role": "user", "content": "weather?"},
                     {"role": "user", "content": 'Result of get_weather with {"city": "Oslo"}: sunny'},
                     {"role": "user", "content": "Result of a tool: late"}]
    assert results_in_words(history[:1]) == history[:1]


def test_words_said_beside_a_call_stay_and_the_call_goes() -> None:
    said = ChatMessage.model_validate({"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]})
    turns = render_messages([ChatMessage(role="user", content="and tomorrow?"), said,
                             ChatMessage(role="tool", content="rain", tool_call_id="c2")],
                            system_prompt=None, tools=None, think=False)
    assert turns == [{"role": "user", "content": "and tomorrow?"}, {"role": "assistant", "content": "Checking."},
                     {"role": "user", "content": "Result of get_weather with {}: rain"}]


def test_hermes_style_tool_calls_are_parsed_and_unknown_functions_ignored() -> None:
    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
            '<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>')
    reply = parse_reply(text, tools=TOOLS, forced=False, think=False)
    assert [c.function.name for c in reply.tool_calls] == ["get_weather"]
    assert json.loads(reply.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert reply.content is None


def test_plain_text_with_tools_stays_content() -> None:
    reply = parse_reply("It is sunny.", tools=TOOLS, forced=False, think=False)
    assert reply.content == "It is sunny." and reply.tool_calls == []


def test_call_markup_never_reaches_the_content() -> None:
    text = ('The weather: <tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call> '
            '<tool_call>{"name": broken json</tool_call>')
    reply = parse_reply(text, tools=TOOLS, forced=False, think=False)
    assert reply.tool_calls == [] and reply.content == "The weather:"


def test_think_path_splits_reasoning_from_answer() -> None:
    reply = parse_reply("<think>2+2 is 4</think> The answer is 4.", tools=None, forced=False, think=True)
    assert reply.reasoning == "2+2 is 4"
    assert reply.content == "The answer is 4."


def test_forced_schema_pins_the_named_function() -> None:
    schema = forced_call_schema(TOOLS, NamedToolChoice.model_validate({"function": {"name": "get_weather"}}))
    assert schema is not None and schema["properties"]["name"]["enum"] == ["get_weather"]
    assert forced_call_schema(TOOLS, "auto") is None


def test_streaming_holds_back_only_what_may_be_a_tool_call() -> None:
    assert may_become_tool_call("<tool")
    assert may_become_tool_call(' {"name"')
    assert not may_become_tool_call("The weather")


def test_forced_schema_is_none_for_a_function_not_in_tools() -> None:
    assert forced_call_schema(TOOLS, NamedToolChoice.model_validate({"function": {"name": "other"}})) is None
