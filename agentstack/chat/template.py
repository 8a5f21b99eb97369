"""From OpenAI chat messages to the model's chat template, and from model text back to
tool calls and reasoning.

The packaged model's template knows only `role` + string `content`, so tools, tool calls
and tool results are written into the messages here, in the widely used Hermes style:
tools listed in the system message, calls as `<tool_call>{"name", "arguments"}</tool_call>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agentstack.chat.call_grammar import call_schema
from agentstack.chat.requests import ChatMessage, NamedToolChoice, Tool, ToolCall, ToolCallFunction

THINK_INSTRUCTION = (
    "Before answering, think step by step inside <think> and </think>, "
    "then give the final answer after </think>."
)
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
TOOL_CALL_BLOCK_RE = re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.DOTALL)
THINK_RE = re.compile(r"^\s*<think>(.*?)(?:</think>|$)", re.DOTALL)


def tools_instruction(tools: list[Tool]) -> str:
    listing = "\n".join(json.dumps(t.function.model_dump(exclude_none=True)) for t in tools)
    return (
        "You can call the following functions:\n<tools>\n"
        f"{listing}\n</tools>\n"
        "To call a function, reply only with "
        '<tool_call>{"name": <function name>, "arguments": <arguments object>}</tool_call>, '
        "one block per call."
    )


def render_messages(
    messages: list[ChatMessage],
    *,
    system_prompt: str | None,
    tools: list[Tool] | None,
    think: bool,
) -> list[dict[str, str]]:
    """Flatten a request into template-ready {role, content} pairs with one system message
    first. Without tools in the prompt the answer can only be in words, so earlier calls
    and results are written as sentences (`results_in_words`)."""
    system_parts = [system_prompt] if system_prompt else []
    turns: list[dict[str, str]] = []
    for message in messages if tools else results_in_words(messages):
        if message.role in ("system", "developer"):
            system_parts.append(message.text())
        elif message.role == "assistant":
            calls = [
                f"{TOOL_CALL_OPEN}{json.dumps({'name': c.function.name, 'arguments': _arguments(c)})}</tool_call>"
                for c in message.tool_calls or []
            ]
            turns.append({"role": "assistant", "content": "\n".join([message.text(), *calls]).strip()})
        else:
            turns.append({"role": message.role, "content": message.text()})
    if tools:
        system_parts.append(tools_instruction(tools))
    if think:
        system_parts.append(THINK_INSTRUCTION)
    if system_parts:
        turns.insert(0, {"role": "system", "content": "\n\n".join(p for p in system_parts if p)})
    return turns


def results_in_words(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The conversation with its calls and results as plain sentences, for an answer in
    words after tool use: shown `<tool_call>` blocks and `tool` turns, a model without the
    tools in its prompt writes that markup back instead of answering from the results."""
    calls = {c.id: f"{c.function.name} with {json.dumps(_arguments(c))}"
             for m in messages for c in m.tool_calls or []}
    out: list[ChatMessage] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            if message.text().strip():
                out.append(ChatMessage(role="assistant", content=message.text()))
        elif message.role == "tool":
            called = calls.get(message.tool_call_id or "") or message.name or "a tool"
            out.append(ChatMessage(role="user", content=f"Result of {called}: {message.text()}"))
        else:
            out.append(message)
    return out


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.function.arguments)
    except ValueError:
        return call.function.arguments


def forced_call_schema(tools: list[Tool], choice: str | NamedToolChoice | None) -> dict[str, Any] | None:
    """JSON schema that guided decoding enforces for `required` or a named `tool_choice`."""
    if choice == "required":
        chosen = tools
    elif isinstance(choice, NamedToolChoice):
        chosen = [t for t in tools if t.function.name == choice.function.name]
    else:
        return None
    if not chosen:
        return None
    variants = [call_schema(t.model_dump(), reduced=False) for t in chosen]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


@dataclass(frozen=True, slots=True)
class ParsedReply:
    content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall]


def parse_reply(text: str, *, tools: list[Tool] | None, forced: bool, think: bool) -> ParsedReply:
    """Split reasoning, tool calls and plain content out of generated text."""
    reasoning = None
    if think:
        match = THINK_RE.match(text)
        if match:
            reasoning = match.group(1).strip()
            text = text[match.end():]
    calls: list[ToolCall] = []
    if tools:
        known = {t.function.name for t in tools}
        payloads = [text] if forced else [m.group(1) for m in TOOL_CALL_RE.finditer(text)]
        if not payloads and text.lstrip().startswith("{"):
            payloads = [text]
        for payload in payloads:
            call = _as_tool_call(payload, known)
            if call is not None:
                calls.append(call)
        if not forced and TOOL_CALL_OPEN in text:
            # Call markup never reaches the content, parsed or not: a call to an unknown
            # function or with broken JSON is dropped, as a client could not run it either.
            text = TOOL_CALL_BLOCK_RE.sub("", text).replace(TOOL_CALL_CLOSE, "")
        elif calls and not forced:
            text = ""
    content = None if forced and calls else text.strip() or None
    return ParsedReply(content=content, reasoning=reasoning, tool_calls=calls)


def _as_tool_call(payload: str, known: set[str]) -> ToolCall | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in known:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return ToolCall(function=ToolCallFunction(name=data["name"], arguments=json.dumps(arguments)))


def may_become_tool_call(text: str) -> bool:
    """While streaming with tools: hold text back if it could still turn into a tool call."""
    stripped = text.lstrip()
    return stripped.startswith("{") or TOOL_CALL_OPEN.startswith(stripped[: len(TOOL_CALL_OPEN)]) or (
        TOOL_CALL_OPEN in stripped
    )
