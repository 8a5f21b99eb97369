"""Tool calling split across two roles, as DualTune does: the `selector` names the
function(s) to call, or `none`; the `arguments` writer fills the call(s) of one chosen
function. `single` is the one-adapter baseline that writes every call at once.

All three read the same context — the compact function listing and the conversation —
so the shared-prefix cache can reuse it across roles; only the tail differs:

    selector:  <context> assistant: "name_a\\nname_b" | "none"
    arguments: <context> user: "Call name_a." assistant: one JSON call per line
    single:    <context> assistant: one JSON call per line | "none"

A call line is `{"name": ..., "arguments": {...}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NONE_SELECTED = "none"
TOOLS_PREAMBLE = (
    "You can call these functions. Parameters marked * are required; "
    "`= value` shows a default."
)

Message = dict[str, str]
Call = dict[str, Any]


def function_spec(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept an OpenAI tool (`{"type": "function", "function": {...}}`) or a bare function."""
    inner = tool.get("function")
    return inner if isinstance(inner, Mapping) else tool


def function_names(tools: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(function_spec(t)["name"]) for t in tools]


def _param_line(name: str, schema: Mapping[str, Any], required: bool) -> str:
    kind = str(schema.get("type", "any"))
    items = schema.get("items")
    if kind == "array" and isinstance(items, Mapping) and "type" in items:
        kind = f"array[{items['type']}]"
    parts = [f"  {name}{'*' if required else ''}: {kind}"]
    if "enum" in schema:
        parts.append(" one of " + json.dumps(schema["enum"]))
    if "default" in schema and not required:
        parts.append(f" = {json.dumps(schema['default'])}")
    description = " ".join(str(schema.get("description", "")).split())
    if description:
        parts.append(f" - {description}")
    return "".join(parts)


def render_function(tool: Mapping[str, Any]) -> str:
    """One function as a short signature block: far fewer tokens than its JSON schema.

    Descriptions stay whole: the long ones are those that state a value's format
    ("City, Country"), and a cut one left the writer copying its fragment as the value."""
    spec = function_spec(tool)
    params = spec.get("parameters") or {}
    properties: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    lines = [f"{spec['name']}: {' '.join(str(spec.get('description', '')).split())}"]
    lines += [_param_line(n, s, n in required) for n, s in properties.items()]
    return "\n".join(lines)


def _text(content: Any) -> str:
    """OpenAI message content (a string, text parts or nothing) as one string."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content or "")


def _call_of(call: Mapping[str, Any]) -> Call:
    """An OpenAI tool call (`{"function": {"name", "arguments": "<json>"}}`) as a call line's dict."""
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return {"name": function.get("name", ""), "arguments": arguments}


def plain_turns(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """OpenAI chat messages as plain `{role, content}` turns, the form the tool roles and the
    gate were trained on: a tool result is a user turn with the result, an assistant's tool
    calls are its call lines, a developer turn is a system turn. Nothing needs the ids of
    calls any more, so any chat model takes these turns as they are."""
    turns: list[Message] = []
    for m in messages:
        role, content = str(m.get("role")), _text(m.get("content"))
        if role == "tool":
            role = "user"
        elif role == "developer":
            role = "system"
        elif role == "assistant" and m.get("tool_calls"):
            content = "\n".join(p for p in (content, calls_text([_call_of(c) for c in m["tool_calls"]])) if p)
        turns.append({"role": role, "content": content})
    return turns


def current_exchange(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """System text, the latest user turn and what followed it (calls and their results).

    The tool roles decide and fill the calls of the request at hand, as they were trained
    to on one-request conversations; earlier exchanges of a long thread only lead them to
    copy old calls (measured on the shipped roles: with a thread's earlier exchange in
    front of "What is 13 times 8?", the selector answered "13 times 7" instead of
    "calculator"). Answering from the whole thread is the answer role's work."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    start = users[-1] if users else 0
    return [m for m in messages[:start] if m.get("role") in ("system", "developer")] + list(messages[start:])


def tool_context(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
    """The prefix every tool role reads: function listing as system turn, then the current
    exchange of the conversation."""
    listing = "\n".join(render_function(t) for t in tools)
    turns = plain_turns(current_exchange(messages))
    system = [t["content"] for t in turns if t["role"] == "system"]
    return [{"role": "system", "content": "\n\n".join([*system, TOOLS_PREAMBLE, listing])},
            *(t for t in turns if t["role"] != "system")]


def selector_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
    return tool_context(messages, tools)


def single_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
    return tool_context(messages, tools)


def arguments_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], name: str
) -> list[Message]:
    return [*tool_context(messages, tools), {"role": "user", "content": f"Call {name}."}]


def selection_text(names: Sequence[str]) -> str:
    """The selector's answer: each chosen name once, in order of first use; `none` if empty."""
    unique = list(dict.fromkeys(names))
    return "\n".join(unique) if unique else NONE_SELECTED


def parse_selection(text: str, tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Chosen function names that exist among `tools`; [] when the selector said none applies."""
    known = set(function_names(tools))
    chosen = [line.strip().strip("`") for line in text.splitlines()]
    return list(dict.fromkeys(name for name in chosen if name in known))


def calls_text(calls: Sequence[Call]) -> str:
    return "\n".join(json.dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls)


def parse_calls(text: str, tools: Sequence[Mapping[str, Any]]) -> list[Call]:
    """Every well-formed call line naming a known function; other lines are ignored."""
    known = set(function_names(tools))
    calls: list[Call] = []
    for line in text.splitlines():
        try:
            data = json.loads(line.strip())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("name") in known and isinstance(data.get("arguments"), dict):
            calls.append({"name": data["name"], "arguments": data["arguments"]})
    return calls

