"""A graph whose node fails on request: the fault to inject for error-path tests."""

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class Counter(TypedDict, total=False):
    fail: bool
    count: int


def step(state: Counter) -> Counter:
    if state.get("fail"):
        raise ValueError("injected failure in step")
    return {"count": state.get("count", 0) + 1, "fail": False}


graph = StateGraph(Counter).add_node(step).add_edge(START, "step").add_edge("step", END)
