"""Messages to template turns, and generated text back to tool calls and reasoning."""

from __future__ import annotations

import json

from agentstack.api.schemas import ChatMessage, NamedToolChoice, Tool
from agentstack.chat.template import (
    ANSWER_FROM_RESULTS,
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


def test_an_answer_in_words_reads_each_result_with_its_question_and_no_markup() -> None:
    """Without tools in the prompt, results join the question they answer, and the last
    turn asks for the answer: a small model shown a bare result talks about it instead."""
    history = [*CALL_AND_RESULT, ChatMessage(role="tool", content="late", tool_call_id="unknown")]
    turns = render_messages(history, system_prompt=None, tools=None, think=False)
    assert turns == [{"role": "user", "content": (
        'weather?\n\nResult of get_weather with {"city": "Oslo"}: sunny\n\nResult of a tool: late'
        f"\n\n{ANSWER_FROM_RESULTS}")}]
    assert results_in_words(history[:1]) == history[:1]


def test_a_result_after_the_models_own_words_becomes_a_turn_of_its_own() -> None:
    said = ChatMessage.model_validate({"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]})
    history = [*CALL_AND_RESULT, ChatMessage(role="assistant", content="Sunny in Oslo."),
               ChatMessage(role="user", content="and tomorrow?"), said,
               ChatMessage(role="tool", content="rain", tool_call_id="c2")]
    turns = render_messages(history, system_prompt=None, tools=None, think=False)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert ANSWER_FROM_RESULTS not in turns[0]["content"]
    assert turns[3]["content"] == "Checking."
    assert turns[4]["content"] == f"Result of get_weather with {{}}: rain\n\n{ANSWER_FROM_RESULTS}"


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
