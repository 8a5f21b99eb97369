"""A graph that takes its time without the engine: its runs last long enough to be
joined from another replica, cancelled, queued behind, or left behind by a killed server."""

import asyncio

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class Ticks(TypedDict, total=False):
    ticks: int
    seconds: float
    done: int


async def tick(state: Ticks) -> Ticks:
    await asyncio.sleep(state.get("seconds", 0.5))
    return {"done": state.get("done", 0) + 1}


def more(state: Ticks) -> str:
    return "tick" if state.get("done", 0) < state.get("ticks", 1) else END


graph = StateGraph(Ticks).add_node(tick).add_edge(START, "tick").add_conditional_edges("tick", more, ["tick", END])
