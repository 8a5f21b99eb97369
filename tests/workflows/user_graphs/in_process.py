"""A user's graph whose nodes call `auto` (the gate) and `tool-calling` in-process, the way
HTTP clients call them: the gate picks the role, selector and arguments write the call."""

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from agentstack.chat_model import ROUTE_METADATA_KEY, RoleChatModel

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name."}},
                       "required": ["city"]},
    },
}


class Asked(TypedDict, total=False):
    question: str
    answer: str
    answer_tokens: int
    route: dict[str, Any]
    tool_calls: list[dict[str, Any]]


async def ask_gate(state: Asked) -> Asked:
    reply = await RoleChatModel(role="auto", max_tokens=32).ainvoke(state["question"])
    usage = reply.usage_metadata or {}
    return {"answer": reply.text, "answer_tokens": usage.get("output_tokens", 0),
            "route": reply.response_metadata[ROUTE_METADATA_KEY]}


async def call_tool(state: Asked) -> Asked:
    model = RoleChatModel(role="tool-calling").bind_tools([WEATHER_TOOL])
    reply = await model.ainvoke("What's the weather in Paris right now?")
    return {"tool_calls": [{"name": c["name"], "args": c["args"]} for c in reply.tool_calls]}


graph = (StateGraph(Asked).add_node(ask_gate).add_node(call_tool)
         .add_edge(START, "ask_gate").add_edge("ask_gate", "call_tool").add_edge("call_tool", END))
