"""`plan_act_reflect`: planner -> actor -> reflector, looping a bounded number of rounds.

The three steps read one growing context: the task, then every contribution so far,
each labelled with the step that wrote it, rendered the same way for every step. The
reflector ends the loop by replying APPROVE; otherwise the planner revises, until
`max_rounds` rounds have run.

Each step's role is the one of the same name unless the run's (or assistant's) config
names another: `{"configurable": {"actor_role": "auto"}}` lets the gate pick the actor's
role and path per request, as `model: "auto"` does over HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph, add_messages
from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from agentstack.chat_model import RoleChatModel

DEFAULT_MAX_ROUNDS = 2
MAX_ROUNDS_LIMIT = 5
RoundCount = Annotated[int, Field(ge=1, le=MAX_ROUNDS_LIMIT)]


class PlanActReflectInput(TypedDict):
    task: str
    max_rounds: NotRequired[RoundCount]


class PlanActReflectState(TypedDict):
    task: str
    max_rounds: NotRequired[RoundCount]
    round: NotRequired[int]
    messages: Annotated[list[AnyMessage], add_messages]
    answer: NotRequired[str]
    approved: NotRequired[bool]


def shared_context(state: PlanActReflectState) -> list[BaseMessage]:
    """What every role reads: one user turn with the task, then each contribution so far
    under the name of the role that wrote it. The role's own instruction is its system
    prompt, so the text after it is the same for all three."""
    parts = [f"Task: {state['task']}"]
    for message in state.get("messages", []):
        if isinstance(message, AIMessage) and message.name:
            parts.append(f"[{message.name}]\n{message.text.strip()}")
    return [HumanMessage(content="\n\n".join(parts))]


def is_approval(text: str) -> bool:
    words = text.strip().upper().split()
    return bool(words) and words[0].strip(".:!,") == "APPROVE"


def build_plan_act_reflect(*, planner_role: str = "planner", actor_role: str = "actor",
                           reflector_role: str = "reflector") -> StateGraph:
    def step(name: str, default_role: str) -> Any:
        async def node(state: PlanActReflectState) -> dict[str, Any]:
            role = (get_config().get("configurable") or {}).get(f"{name}_role") or default_role
            reply = await RoleChatModel(role=role).ainvoke(shared_context(state))
            return {"messages": [AIMessage(content=reply.text, name=name, id=reply.id,
                                           usage_metadata=reply.usage_metadata,
                                           response_metadata=reply.response_metadata)]}
        return node

    plan, act, reflect = step("planner", planner_role), step("actor", actor_role), step("reflector", reflector_role)

    async def actor(state: PlanActReflectState) -> dict[str, Any]:
        update = await act(state)
        return {**update, "answer": update["messages"][0].text}

    async def reflector(state: PlanActReflectState) -> dict[str, Any]:
        update = await reflect(state)
        return {**update, "approved": is_approval(update["messages"][0].text), "round": state.get("round", 0) + 1}

    def after_reflection(state: PlanActReflectState) -> str:
        if state.get("approved") or state.get("round", 0) >= state.get("max_rounds", DEFAULT_MAX_ROUNDS):
            return END
        return "planner"

    builder = StateGraph(PlanActReflectState, input_schema=PlanActReflectInput)
    builder.add_node("planner", plan)
    builder.add_node("actor", actor)
    builder.add_node("reflector", reflector)
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "actor")
    builder.add_edge("actor", "reflector")
    builder.add_conditional_edges("reflector", after_reflection, ["planner", END])
    return builder


graph = build_plan_act_reflect().compile(name="plan_act_reflect")
