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
MAX_PARAM_DESCRIPTION_CHARS = 80

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
        parts.append(f" - {description[:MAX_PARAM_DESCRIPTION_CHARS]}")
    return "".join(parts)


def render_function(tool: Mapping[str, Any]) -> str:
    """One function as a short signature block: far fewer tokens than its JSON schema."""
    spec = function_spec(tool)
    params = spec.get("parameters") or {}
    properties: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    lines = [f"{spec['name']}: {' '.join(str(spec.get('description', '')).split())}"]
    lines += [_param_line(n, s, n in required) for n, s in properties.items()]
    return "\n".join(lines)


def tool_context(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
    """The prefix every tool role reads: function listing as system turn, then the conversation."""
    listing = "\n".join(render_function(t) for t in tools)
    system = [str(m.get("content") or "") for m in messages if m.get("role") in ("system", "developer")]
    turns: list[Message] = [{"role": "system", "content": "\n\n".join([*system, TOOLS_PREAMBLE, listing])}]
    turns += [
        {"role": str(m["role"]), "content": str(m.get("content") or "")}
        for m in messages
        if m.get("role") not in ("system", "developer")
    ]
    return turns


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


def parse_call(text: str, tool: Mapping[str, Any]) -> Call | None:
    """The first call to `tool` in the text, if any."""
    calls = parse_calls(text, [tool])
    return calls[0] if calls else None
