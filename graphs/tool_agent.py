"""`tool_agent`: selector -> arguments -> execute -> answer, each step on its own role.

DualTune's split of tool use: the `selector` role names the function(s) that apply
(or none), the `arguments` role writes the call(s) of each chosen function (several
for parallel calls), the tools run here, and the `assistant` role answers from their
results. A tool that fails (bad arguments, unknown unit, ...) is reported back to the
model as an error result, so the run goes on and the answer can say what went wrong.

    selector --none--> answer
        \\--names--> arguments --no valid call--> answer
                          \\--calls--> execute --> answer

`build_tool_agent(tools=[...])` builds the same graph on other tools;
`approve_tools=True` pauses before running calls (`interrupt`) until a client resumes
with `Command(resume=True)` (or False to decline). The select and arguments steps read
the tools ranked by relevance to the request, and of more than six the `shortlist` most
relevant (`tool_shortlist`; None: all of them, as given).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage, convert_to_openai_messages
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, MessagesState, StateGraph, add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict

from agentstack.chat_model import RoleChatModel
from agentstack.chat.tool_prompts import arguments_messages, parse_calls, parse_selection, selector_messages
from agentstack.chat.tool_shortlist import SHORTLIST_SIZE, shortlisted
from graphs.tools import DEFAULT_TOOLS, ToolRegistry


class ToolAgentInput(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class ToolAgentState(MessagesState):
    selected: list[str]


def _history(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return convert_to_openai_messages(messages)  # type: ignore[return-value]


def _pending_calls(state: ToolAgentState) -> list[dict[str, Any]]:
    last = state["messages"][-1] if state["messages"] else None
    return list(last.tool_calls) if isinstance(last, AIMessage) else []


def _approved(decision: Any) -> bool:
    if isinstance(decision, dict):
        return bool(decision.get("approved", False))
    return bool(decision)


async def _run_tool(registry: ToolRegistry, call: dict[str, Any]) -> ToolMessage:
    """One call's result; any failure becomes an error result for the model to read."""
    found = registry.get(call["name"])
    try:
        if found is None:
            raise LookupError(f"no tool named {call['name']!r}")
        output = await found.ainvoke(call["args"])
    except GraphBubbleUp:
        raise
    except Exception as e:
        return ToolMessage(content=f"Error: {type(e).__name__}: {e}", tool_call_id=call["id"],
                           name=call["name"], status="error")
    return ToolMessage(content=str(output), tool_call_id=call["id"], name=call["name"])


def build_tool_agent(
    tools: Iterable[BaseTool | Callable[..., Any]] = DEFAULT_TOOLS,
    *,
    selector_role: str = "selector",
    arguments_role: str = "arguments",
    answer_role: str = "assistant",
    approve_tools: bool = False,
    shortlist: int | None = SHORTLIST_SIZE,
) -> StateGraph:
    """The tool agent over `tools` (LangChain tools or typed, documented functions)."""
    registry = ToolRegistry.of(tools)
    specs = registry.openai_tools()
    by_name = {s["function"]["name"]: s for s in specs}

    async def select(state: ToolAgentState) -> dict[str, Any]:
        history = _history(state["messages"])
        listed = shortlisted(history, specs, shortlist)
        reply = await RoleChatModel(role=selector_role).ainvoke(selector_messages(history, listed))
        return {"selected": parse_selection(reply.text, listed)}

    async def arguments(state: ToolAgentState) -> dict[str, Any]:
        history = _history(state["messages"])
        listed = shortlisted(history, specs, shortlist)
        writer = RoleChatModel(role=arguments_role)

        async def calls_of(name: str) -> list[dict[str, Any]]:
            reply = await writer.ainvoke(arguments_messages(history, listed, name))
            return parse_calls(reply.text, [by_name[name]])

        calls = [c for found in await asyncio.gather(*(calls_of(n) for n in state["selected"])) for c in found]
        if not calls:
            return {}
        tool_calls = [{"name": c["name"], "args": c["arguments"], "id": f"call_{uuid.uuid4().hex[:24]}",
                       "type": "tool_call"} for c in calls]
        return {"messages": [AIMessage(content="", tool_calls=tool_calls, name=arguments_role)]}

    async def execute(state: ToolAgentState) -> dict[str, Any]:
        calls = _pending_calls(state)
        if approve_tools and not _approved(interrupt({"question": "Run these tool calls?", "tool_calls": calls})):
            return {"messages": [ToolMessage(content="The user declined this call.", tool_call_id=c["id"],
                                             name=c["name"], status="error") for c in calls]}
        return {"messages": list(await asyncio.gather(*(_run_tool(registry, c) for c in calls)))}

    async def answer(state: ToolAgentState) -> dict[str, Any]:
        return {"messages": [await RoleChatModel(role=answer_role).ainvoke(state["messages"])]}

    builder = StateGraph(ToolAgentState, input_schema=ToolAgentInput)
    builder.add_node("select", select)
    builder.add_node("arguments", arguments)
    builder.add_node("execute", execute)
    builder.add_node("answer", answer)
    builder.add_edge(START, "select")
    builder.add_conditional_edges("select", lambda s: "arguments" if s.get("selected") else "answer",
                                  ["arguments", "answer"])
    builder.add_conditional_edges("arguments", lambda s: "execute" if _pending_calls(s) else "answer",
                                  ["execute", "answer"])
    builder.add_edge("execute", "answer")
    builder.add_edge("answer", END)
    return builder


graph = build_tool_agent().compile(name="tool_agent")
