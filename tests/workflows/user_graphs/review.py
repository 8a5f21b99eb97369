"""A user's own graph: a role drafts one sentence, then a person approves or edits it."""

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from agentstack.chat_model import RoleChatModel


class Review(TypedDict, total=False):
    topic: str
    draft: str
    final: str


def draft(state: Review) -> Review:
    reply = RoleChatModel(role="assistant", max_tokens=24).invoke(f"Write one sentence about {state['topic']}.")
    return {"draft": reply.text}


def review(state: Review) -> Review:
    decision = interrupt({"draft": state["draft"]})
    return {"final": decision.get("edited") or state["draft"]}


graph = (StateGraph(Review).add_node(draft).add_node(review)
         .add_edge(START, "draft").add_edge("draft", "review").add_edge("review", END))
