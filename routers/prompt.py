"""The prompt and token budget of a routed request, per path (think or direct).

Serving (routers.serving, routers.features) and the gate's measurements
(routers.offline) share them, so the gate is trained on exactly what it serves."""

from __future__ import annotations

from typing import Any, Literal

from agentstack.chat.template import THINK_INSTRUCTION
from agentstack.chat.tool_prompts import tool_context

Path_ = Literal["think", "direct"]
# The think path's token budget covers the reasoning and the answer line after it; the
# direct path has room for a tool call line or a short sentence, not for worked steps.
THINK_MAX_TOKENS = 160
DIRECT_MAX_TOKENS = 80


def max_tokens_for(path: Path_) -> int:
    """The generation budget the gate measured each path with."""
    return THINK_MAX_TOKENS if path == "think" else DIRECT_MAX_TOKENS


def route_messages(
    messages: list[dict[str, str]], tools: list[dict[str, Any]] | None, *, think: bool
) -> list[dict[str, str]]:
    """The prompt every routed request is served with, measured with and trained on.

    With tools, the compact listing the tool roles were trained on; on the think path the
    shared think instruction joins the system message."""
    turns = tool_context(messages, tools) if tools else [dict(m) for m in messages]
    if think:
        if turns and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{THINK_INSTRUCTION}"}
        else:
            turns.insert(0, {"role": "system", "content": THINK_INSTRUCTION})
    return turns
